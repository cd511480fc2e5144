#pragma once
// Labels on contact sheets: a 5 x 7 pixel bitmap font (upper-case letters, digits and the
// punctuation labels need), drawn into an RGB8 buffer at an integer scale. Lower-case input is
// drawn upper-case; a character the font lacks is drawn as a hollow box.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace siam::data {

struct Rgb {
  uint8_t r, g, b;
};

// A W x H RGB8 image, row-major.
struct Canvas {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;
  Canvas(int w, int h, Rgb fill);
  void set(int x, int y, Rgb c);  // ignores points outside
  void fill_rect(int x, int y, int w, int h, Rgb c);
  // The outline of the box [x, x + w) x [y, y + h), `thickness` pixels inwards.
  void draw_box(int x, int y, int w, int h, int thickness, Rgb c);
};

// Pixel width of `text` at `scale` (6 px per character, the last without its gap).
int text_width(const std::string& text, int scale);
constexpr int kTextHeight = 7;  // times the scale
// Draws `text` with its top-left corner at (x, y).
void draw_text(Canvas& canvas, int x, int y, const std::string& text, int scale, Rgb color);

}  // namespace siam::data

#pragma once
// Errors. A user can cause siam::Error (bad path, truncated file, wrong shape, bad flag):
// its message names the thing, what was expected and what was found. Programming errors
// (broken invariants) go through SIAM_CHECK, which adds file:line.
#include <sstream>
#include <stdexcept>
#include <string>

namespace siam {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws siam::Error with the arguments streamed together.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::cat(args...));
}

}  // namespace siam

#define SIAM_CHECK(cond, ...)                                                          \
  do {                                                                                 \
    if (!(cond))                                                                       \
      throw ::siam::Error(::siam::detail::cat(__FILE__, ":", __LINE__, ": check '", #cond, \
                                              "' failed: ", ##__VA_ARGS__));           \
  } while (0)

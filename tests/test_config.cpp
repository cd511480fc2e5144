// Config files: TOML over a schema, --set overrides, clear errors for unknown keys and types.
#include <gtest/gtest.h>

#include "apps/config.h"
#include "tensor/error.h"

using siam::Error;
using siam::apps::Config;

static Config make() {
  return Config({{"method", std::string("simclr"), "SSL method"},
                 {"epochs", int64_t{100}, "training epochs"},
                 {"optimizer.lr", 0.3, "base learning rate"},
                 {"optimizer.nesterov", false, "Nesterov momentum"},
                 {"augment.scale", std::vector<double>{0.08, 1.0}, "crop scale range"}});
}

static std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsFileAndOverrides) {
  Config c = make();
  EXPECT_EQ(c.get_string("method"), "simclr");
  c.load_string("epochs = 5\n[optimizer]\nlr = 1\n[augment]\nscale = [0.2, 1.0]\n", "test.toml");
  EXPECT_EQ(c.get_int("epochs"), 5);
  EXPECT_EQ(c.get_double("optimizer.lr"), 1.0) << "an integer is accepted for a float key";
  EXPECT_EQ(c.get_list("augment.scale"), (std::vector<double>{0.2, 1.0}));
  c.set("optimizer.lr=0.05");
  c.set("method=byol");
  c.set("optimizer.nesterov=true");
  c.set("augment.scale=[0.5, 0.9]");
  EXPECT_EQ(c.get_double("optimizer.lr"), 0.05);
  EXPECT_EQ(c.get_string("method"), "byol");
  EXPECT_TRUE(c.get_bool("optimizer.nesterov"));
  EXPECT_EQ(c.get_list("augment.scale"), (std::vector<double>{0.5, 0.9}));
}

TEST(Config, RoundTripThroughToml) {
  Config a = make();
  a.set("epochs=7");
  a.set("method=dino");
  Config b = make();
  b.load_string(a.to_toml(), "resolved.toml");
  EXPECT_EQ(b.get_int("epochs"), 7);
  EXPECT_EQ(b.get_string("method"), "dino");
  EXPECT_EQ(b.to_toml(), a.to_toml());
}

TEST(Config, ErrorsNameTheKeyAndTheValidOnes) {
  Config c = make();
  std::string e = error_of([&] { c.load_string("[optimizer]\nlrr = 0.1\n", "run.toml"); });
  EXPECT_NE(e.find("run.toml"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown config key 'optimizer.lrr'"), std::string::npos) << e;
  EXPECT_NE(e.find("optimizer.lr, optimizer.nesterov"), std::string::npos) << e;
  e = error_of([&] { c.set("epochs=ten"); });
  EXPECT_NE(e.find("'epochs' must be an integer"), std::string::npos) << e;
  e = error_of([&] { c.set("nokey=1"); });
  EXPECT_NE(e.find("unknown config key 'nokey'"), std::string::npos) << e;
  e = error_of([&] { c.set("epochs"); });
  EXPECT_NE(e.find("expected key=value"), std::string::npos) << e;
  e = error_of([&] { c.load_string("epochs = [1, \n", "bad.toml"); });
  EXPECT_NE(e.find("bad.toml:"), std::string::npos) << e;
  e = error_of([&] { c.load_file("/nonexistent/run.toml"); });
  EXPECT_NE(e.find("/nonexistent/run.toml"), std::string::npos) << e;
}

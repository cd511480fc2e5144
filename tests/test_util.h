#pragma once
// Helpers shared by the test files.
#include <gtest/gtest.h>

#include <string>

#include "tensor/error.h"

namespace siam::test {

// f() must throw a siam::Error whose message contains `fragment`.
template <class F>
void expect_error(F f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no siam::Error; expected one mentioning \"" << fragment << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace siam::test

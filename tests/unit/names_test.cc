// SPDX-License-Identifier: Apache-2.0
// The lexical rules both programs share: ids, env names, path components, absolute paths.
#include "common/names.h"

#include <gtest/gtest.h>

#include <string>

namespace sbx {
namespace {

TEST(SandboxId, AcceptsTheDocumentedAlphabet) {
  EXPECT_EQ(check_sandbox_id("vm-0001"), "");
  EXPECT_EQ(check_sandbox_id("A.b_c-9"), "");
  EXPECT_EQ(check_sandbox_id(std::string(64, 'a')), "");
}

TEST(SandboxId, RefusesEverythingElse) {
  EXPECT_NE(check_sandbox_id(""), "");
  EXPECT_NE(check_sandbox_id(std::string(65, 'a')), "");
  EXPECT_NE(check_sandbox_id("a/b"), "");
  EXPECT_NE(check_sandbox_id("a b"), "");
  EXPECT_NE(check_sandbox_id("a\nb"), "");
  EXPECT_NE(check_sandbox_id(std::string("a\0b", 3)), "");
  EXPECT_NE(check_sandbox_id(".."), "");
  EXPECT_NE(check_sandbox_id("."), "");
  EXPECT_NE(check_sandbox_id("vm;rm"), "");
}

TEST(EnvName, AcceptsPortableNames) {
  EXPECT_EQ(check_env_name("PATH"), "");
  EXPECT_EQ(check_env_name("_x1"), "");
  EXPECT_EQ(check_env_entry("HOME=/root=x"), "");
  EXPECT_EQ(check_env_entry("EMPTY="), "");
}

TEST(EnvName, RefusesLoaderAndMalformedNames) {
  EXPECT_NE(check_env_name("LD_PRELOAD"), "");
  EXPECT_NE(check_env_name("LD_LIBRARY_PATH"), "");
  EXPECT_NE(check_env_name("GCONV_PATH"), "");
  EXPECT_NE(check_env_name("1BAD"), "");
  EXPECT_NE(check_env_name("A-B"), "");
  EXPECT_NE(check_env_name(""), "");
  EXPECT_NE(check_env_entry("NOEQUALS"), "");
  EXPECT_NE(check_env_entry("=value"), "");
  EXPECT_NE(check_env_entry("LD_AUDIT=x"), "");
}

TEST(PathComponent, RefusesSlashesDotsAndEmpty) {
  EXPECT_EQ(check_path_component("vmlinux"), "");
  EXPECT_NE(check_path_component(""), "");
  EXPECT_NE(check_path_component("."), "");
  EXPECT_NE(check_path_component(".."), "");
  EXPECT_NE(check_path_component("a/b"), "");
  EXPECT_NE(check_path_component(std::string(256, 'a')), "");
  EXPECT_NE(check_path_component(std::string("a\0", 2)), "");
}

TEST(AbsolutePath, AcceptsNormalizedPaths) {
  EXPECT_EQ(check_absolute_path("/"), "");
  EXPECT_EQ(check_absolute_path("/run/sbx/vm-1"), "");
  EXPECT_EQ(check_absolute_path("/a/.hidden"), "");
}

TEST(AbsolutePath, RefusesRelativeDotsDoubleSlashesAndTrailingSlash) {
  EXPECT_NE(check_absolute_path(""), "");
  EXPECT_NE(check_absolute_path("run/sbx"), "");
  EXPECT_NE(check_absolute_path("/run/../etc"), "");
  EXPECT_NE(check_absolute_path("/run/./sbx"), "");
  EXPECT_NE(check_absolute_path("/run//sbx"), "");
  EXPECT_NE(check_absolute_path("/run/sbx/"), "");
  EXPECT_NE(check_absolute_path("/" + std::string(4096, 'a')), "");
  EXPECT_NE(check_absolute_path(std::string("/a\0b", 4)), "");
}

TEST(PathParts, DirnameBasenameAndRelative) {
  EXPECT_EQ(path_dirname("/run/sbx/vm"), "/run/sbx");
  EXPECT_EQ(path_dirname("/vm"), "/");
  EXPECT_EQ(path_basename("/run/sbx/vm"), "vm");
  std::string_view rest;
  ASSERT_TRUE(path_relative_to("/img", "/img/a/b", &rest));
  EXPECT_EQ(rest, "a/b");
  ASSERT_TRUE(path_relative_to("/img", "/img", &rest));
  EXPECT_EQ(rest, "");
  EXPECT_FALSE(path_relative_to("/img", "/imgx/a", &rest));
  EXPECT_FALSE(path_relative_to("/img", "/other", &rest));
  ASSERT_TRUE(path_relative_to("/", "/etc", &rest));
  EXPECT_EQ(rest, "etc");
}

}  // namespace
}  // namespace sbx

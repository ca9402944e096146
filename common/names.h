// SPDX-License-Identifier: Apache-2.0
// Lexical rules shared by the helper (which enforces them) and the supervisor (which checks a
// spec before spawning anything): ids, env names, netns names, link names, absolute paths.
// Each returns an empty string when the input is acceptable, else why it is not.
#pragma once

#include <string>
#include <string_view>

namespace sbx {

// [A-Za-z0-9_.-]{1,64}, and not "." or "..".
std::string check_sandbox_id(std::string_view id);

// [A-Za-z_][A-Za-z0-9_]*, at most 255 bytes, not starting with LD_ or GCONV_.
std::string check_env_name(std::string_view name);

// "NAME=VALUE" with NAME as check_env_name.
std::string check_env_entry(std::string_view entry);

// A single path component: 1..255 bytes, no '/', no NUL, not "." or "..".
std::string check_path_component(std::string_view name);

// Absolute, at most 4095 bytes, no NUL, no empty, "." or ".." components, no trailing '/'
// (except "/" itself, which callers refuse where it makes no sense).
std::string check_absolute_path(std::string_view path);

// For an absolute path accepted by check_absolute_path: the part after the last '/'.
std::string_view path_basename(std::string_view path);
// ... and the part before it ("/" for a top-level entry).
std::string_view path_dirname(std::string_view path);

// If `path` is `root` or lies below it (component-wise), the remainder without a leading '/'
// ("" when equal); otherwise nullopt-like: returns false.
bool path_relative_to(std::string_view root, std::string_view path, std::string_view* rest);

}  // namespace sbx

// SPDX-License-Identifier: Apache-2.0
#include "common/names.h"

namespace sbx {
namespace {

bool is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

}  // namespace

std::string check_sandbox_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return "must be 1 to 64 characters";
  if (id == "." || id == "..") return "must not be '.' or '..'";
  for (char c : id) {
    if (!(is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-')) {
      return "may contain only A-Z a-z 0-9 _ . -";
    }
  }
  return {};
}

std::string check_env_name(std::string_view name) {
  if (name.empty() || name.size() > 255) return "must be 1 to 255 characters";
  if (!(is_alpha(name[0]) || name[0] == '_')) return "must start with a letter or '_'";
  for (char c : name) {
    if (!(is_alpha(c) || is_digit(c) || c == '_')) return "may contain only A-Z a-z 0-9 _";
  }
  if (name.starts_with("LD_") || name.starts_with("GCONV_")) {
    return "LD_* and GCONV_* variables are refused";
  }
  return {};
}

std::string check_env_entry(std::string_view entry) {
  size_t eq = entry.find('=');
  if (eq == std::string_view::npos) return "must be NAME=VALUE";
  if (entry.find('\0') != std::string_view::npos) return "must not contain NUL";
  return check_env_name(entry.substr(0, eq));
}

std::string check_path_component(std::string_view name) {
  if (name.empty() || name.size() > 255) return "must be 1 to 255 characters";
  if (name == "." || name == "..") return "must not be '.' or '..'";
  if (name.find('/') != std::string_view::npos) return "must not contain '/'";
  if (name.find('\0') != std::string_view::npos) return "must not contain NUL";
  return {};
}

std::string check_absolute_path(std::string_view path) {
  if (path.empty() || path[0] != '/') return "must be an absolute path";
  if (path.size() > 4095) return "is longer than 4095 bytes";
  if (path.find('\0') != std::string_view::npos) return "must not contain NUL";
  if (path == "/") return {};
  if (path.back() == '/') return "must not end with '/'";
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string_view::npos) next = path.size();
    std::string_view comp = path.substr(pos, next - pos);
    if (comp.empty()) return "must not contain '//'";
    if (comp == "." || comp == "..") return "must not contain '.' or '..' components";
    if (comp.size() > 255) return "has a component longer than 255 bytes";
    pos = next + 1;
  }
  return {};
}

std::string_view path_basename(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string_view path_dirname(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool path_relative_to(std::string_view root, std::string_view path, std::string_view* rest) {
  if (root == "/") {
    if (path.empty() || path[0] != '/') return false;
    *rest = path.substr(1);
    return true;
  }
  if (!path.starts_with(root)) return false;
  if (path.size() == root.size()) {
    *rest = {};
    return true;
  }
  if (path[root.size()] != '/') return false;
  *rest = path.substr(root.size() + 1);
  return true;
}

}  // namespace sbx

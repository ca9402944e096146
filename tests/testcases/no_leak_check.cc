// SPDX-License-Identifier: Apache-2.0
// Linked into the programs that run as the VMM in the sanitizer build: LeakSanitizer's final
// check attaches to the process's own threads with ptrace, which the VMM's syscall filter
// refuses (EPERM), and would then fail the program. Address and undefined-behaviour checks
// stay on.
extern "C" const char* __lsan_default_options() {
  return "detect_leaks=0";
}

// SPDX-License-Identifier: Apache-2.0
// The commands that find and drive the sandboxes of a state dir after the process that started
// them is gone: `ps`, `events`, `stop`, `wait` and `rm`. They read DIR/<id>/ and talk to a live
// supervisor through its control socket; they need no privilege and change nothing but `rm`'s.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace sbx::supervisor {

struct StateCommand {
  std::string name;  // ps, events, stop, wait, rm
  std::string id;    // all but ps
  std::string state_dir;
  bool json = false;                   // ps
  bool follow = false;                 // events
  std::optional<uint32_t> timeout_ms;  // stop
};

// Runs it, printing to stdout and errors to stderr; returns the process's exit status:
// ps, events, rm: 0, or 1 on an error; stop, wait: the VMM's exit status (the code, or
// 128+signal), or 125 when the sandbox is lost or cannot be reached.
int run_state_command(const StateCommand& command);

}  // namespace sbx::supervisor

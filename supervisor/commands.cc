// SPDX-License-Identifier: Apache-2.0
#include "supervisor/commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <variant>

#include "common/unique_fd.h"
#include "supervisor/clock.h"
#include "supervisor/control.h"
#include "supervisor/state_dir.h"

namespace sbx::supervisor {
namespace json = boost::json;
namespace {

constexpr int kUnreachable = 125;

int error(const std::string& message, int status) {
  std::fprintf(stderr, "sbx-supervisor: %s\n", message.c_str());
  return status;
}

void print_line(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string age_text(int64_t ms) {
  const int64_t s = ms < 0 ? 0 : ms / 1000;
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

int ps(int root, bool as_json) {
  const int64_t now = unix_time_ms();
  if (!as_json)
    std::printf("%-24s %10s %10s %6s %-9s %s\n", "ID", "SUPERVISOR", "VMM", "AGE", "STATE",
                "STATUS");
  for (const auto& id : list_sandbox_ids(root)) {
    auto got = inspect_sandbox(root, id);
    if (auto* e = std::get_if<std::string>(&got)) {
      std::fprintf(stderr, "sbx-supervisor: %s\n", e->c_str());
      continue;
    }
    const SandboxView& v = std::get<SandboxView>(got);
    const SandboxRecord r = v.record.value_or(SandboxRecord{});
    if (as_json) {
      json::object o{{"id", id},
                     {"supervisor_pid", r.supervisor_pid},
                     {"vmm_pid", r.vmm_pid},
                     {"age_ms", r.start_time_ms > 0 ? now - r.start_time_ms : 0},
                     {"state", v.state}};
      if (v.exited) {
        o["outcome"] = v.exited->contains("outcome") ? v.exited->at("outcome") : nullptr;
        o["exit_status"] = exit_status_of(*v.exited);
      }
      print_line(json::serialize(o));
      continue;
    }
    std::string status = "-";
    if (v.exited) {
      const json::value* outcome = v.exited->if_contains("outcome");
      status = (outcome != nullptr && outcome->is_string() ? std::string(outcome->as_string())
                                                           : std::string("?")) +
               " " + std::to_string(exit_status_of(*v.exited));
    }
    std::printf("%-24s %10d %10d %6s %-9s %s\n", id.c_str(), r.supervisor_pid, r.vmm_pid,
                age_text(r.start_time_ms > 0 ? now - r.start_time_ms : 0).c_str(), v.state.c_str(),
                status.c_str());
  }
  return 0;
}

// The `exited` event of a sandbox that is no longer live, printed; its exit status, or 125 when
// it is lost.
int answer_from_files(int root, const std::string& id) {
  auto got = inspect_sandbox(root, id);
  if (auto* e = std::get_if<std::string>(&got)) return error(*e, kUnreachable);
  const SandboxView& v = std::get<SandboxView>(got);
  if (v.exited) {
    print_line(json::serialize(*v.exited));
    return exit_status_of(*v.exited);
  }
  if (v.live) return error("sandbox " + id + " is live but its control socket failed", 125);
  return error("sandbox " + id + " is lost: its supervisor is gone without an exit status", 125);
}

// The `event` of a line, or "" when it is not an event.
std::string event_name(const std::string& line) {
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  if (ec || !v.is_object()) return {};
  const json::value* event = v.as_object().if_contains("event");
  return event != nullptr && event->is_string() ? std::string(event->as_string()) : std::string();
}

// Reads lines until the `exited` event; prints and returns its status, or nullopt at EOF.
std::optional<int> read_until_exited(int fd, bool print_all) {
  std::string buffer;
  while (auto line = read_line(fd, &buffer)) {
    boost::system::error_code ec;
    json::value v = json::parse(*line, ec);
    const json::object* o = !ec && v.is_object() ? &v.as_object() : nullptr;
    const json::value* event = o != nullptr ? o->if_contains("event") : nullptr;
    const bool exited = event != nullptr && event->is_string() && event->as_string() == "exited";
    if (print_all || exited) print_line(*line);
    if (exited) return exit_status_of(*o);
    if (o != nullptr && o->contains("ok") && o->at("ok").is_bool() && !o->at("ok").as_bool()) {
      const json::value* why = o->if_contains("error");
      std::fprintf(stderr, "sbx-supervisor: the supervisor refused: %s\n",
                   why != nullptr && why->is_string() ? why->as_string().c_str() : "?");
    }
  }
  return std::nullopt;
}

// A connection to the live supervisor of `id`, or why not.
std::variant<UniqueFd, std::string> connect_to(int root, const std::string& id) {
  UniqueFd dir(openat(root, id.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return "no sandbox " + id + " in the state dir";
  return connect_control(dir.get());
}

int events(int root, const std::string& id, bool follow) {
  auto got = inspect_sandbox(root, id);
  if (auto* e = std::get_if<std::string>(&got)) return error(*e, 1);
  if (std::get<SandboxView>(got).live) {
    auto conn = connect_to(root, id);
    if (auto* fd = std::get_if<UniqueFd>(&conn)) {
      if (send_request(fd->get(), json::object{{"op", "events"}, {"follow", follow}}).empty()) {
        std::string buffer;
        bool exited = false;
        while (auto line = read_line(fd->get(), &buffer)) {
          print_line(*line);
          exited = exited || event_name(*line) == "exited";
        }
        if (!follow || exited) return 0;
        // The supervisor went away mid-follow without `exited`: its files say how it ended.
        auto again = inspect_sandbox(root, id);
        if (std::holds_alternative<SandboxView>(again) &&
            std::get<SandboxView>(again).state == "exited") {
          return 0;
        }
        return error("sandbox " + id + " is lost: its supervisor ended without an exit status", 1);
      }
    } else {
      // Gone between the two looks: its files have it all.
      std::fprintf(stderr, "sbx-supervisor: %s; reading %s\n", std::get<std::string>(conn).c_str(),
                   kEventsName);
    }
  }
  auto lines = read_event_lines(root, id);
  if (auto* e = std::get_if<std::string>(&lines)) return error(*e, 1);
  for (const auto& line : std::get<std::vector<std::string>>(lines)) print_line(line);
  auto again = inspect_sandbox(root, id);
  if (follow && std::holds_alternative<SandboxView>(again) &&
      std::get<SandboxView>(again).state == "lost") {
    return error("sandbox " + id + " is lost: its supervisor is gone without an exit status", 1);
  }
  return 0;
}

int stop_or_wait(int root, const std::string& id, bool stop, std::optional<uint32_t> timeout) {
  auto got = inspect_sandbox(root, id);
  if (auto* e = std::get_if<std::string>(&got)) return error(*e, kUnreachable);
  if (!std::get<SandboxView>(got).live) return answer_from_files(root, id);
  auto conn = connect_to(root, id);
  if (auto* e = std::get_if<std::string>(&conn)) {
    // It may have just exited; if not, the socket's failure is the error.
    auto again = inspect_sandbox(root, id);
    if (std::holds_alternative<SandboxView>(again) && !std::get<SandboxView>(again).live) {
      return answer_from_files(root, id);
    }
    return error(*e, kUnreachable);
  }
  const int fd = std::get<UniqueFd>(conn).get();
  if (stop) {
    json::object req{{"op", "stop"}};
    if (timeout) req["timeout_ms"] = *timeout;
    send_request(fd, req);
  }
  send_request(fd, json::object{{"op", "wait"}});
  if (auto status = read_until_exited(fd, false)) return *status;
  return answer_from_files(root, id);  // the supervisor closed first: exit.json has it
}

}  // namespace

int run_state_command(const StateCommand& c) {
  auto opened = open_state_root(c.state_dir);
  if (auto* e = std::get_if<std::string>(&opened)) {
    return error(*e, c.name == "stop" || c.name == "wait" ? kUnreachable : 1);
  }
  const int root = std::get<UniqueFd>(opened).get();
  if (c.name == "ps") return ps(root, c.json);
  if (c.name == "events") return events(root, c.id, c.follow);
  if (c.name == "stop") return stop_or_wait(root, c.id, true, c.timeout_ms);
  if (c.name == "wait") return stop_or_wait(root, c.id, false, std::nullopt);
  if (c.name == "rm") {
    if (std::string why = remove_sandbox_state(root, c.id); !why.empty()) return error(why, 1);
    return 0;
  }
  return error("unknown command " + c.name, 2);
}

}  // namespace sbx::supervisor

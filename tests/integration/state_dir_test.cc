// SPDX-License-Identifier: Apache-2.0
// The state dir and the commands that re-adopt a sandbox (`run --state-dir --detach`, `ps`,
// `events --follow`, `stop`, `wait`, `rm`), the control socket's refusals and systemd's
// readiness protocol: the real supervisor driven as the test user, a manager process killed
// under it, supervisors killed during their last writes, a full state dir, 200 sandboxes.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tests/integration/helper_env.h"
#include "tests/integration/supervisor_env.h"

namespace sbx::it {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;

std::string left_processes() {
  return ::testing::PrintToString(HelperEnv::test_user_processes());
}

json::object parse_object(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return {};
  return v.as_object();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// A unix stream client run in a forked child as `uid` (dumpable, as any command of the user
// is): connects to `path`, sends `payload`, and returns the lines that come back until EOF or
// `max_lines`; the first element is "errno N" when the connect failed.
std::vector<std::string> talk_as(uid_t uid, gid_t gid, const std::string& path,
                                 const std::string& payload, size_t max_lines) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return {"pipe failed"};
  pid_t child = fork();
  if (child == 0) {
    close(p[0]);
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(1);
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    std::string out;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), std::min(path.size(), sizeof(addr.sun_path) - 1));
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      out = "errno " + std::to_string(errno) + "\n";
    } else {
      (void)!send(fd, payload.data(), payload.size(), MSG_NOSIGNAL);
      size_t lines = 0;
      char c;
      pollfd pfd{fd, POLLIN, 0};
      while (lines < max_lines && poll(&pfd, 1, patience_ms(5000)) == 1 && read(fd, &c, 1) == 1) {
        out += c;
        if (c == '\n') ++lines;
      }
    }
    (void)!write(p[1], out.data(), out.size());
    _exit(0);
  }
  close(p[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
  close(p[0]);
  waitpid(child, nullptr, 0);
  return lines_of(text);
}

class StateDirTest : public SupervisorEnvTest {
 protected:
  // A state dir owned by the test user, mode 0700, under the env's work dir.
  std::string make_state_dir(const std::string& tag) {
    const std::string dir = env().work() + "/state-" + tag + "-" + std::to_string(++dirs_);
    EXPECT_EQ(mkdir(dir.c_str(), 0700), 0) << dir << ": " << std::strerror(errno);
    EXPECT_EQ(chown(dir.c_str(), kTestUid, kTestGid), 0);
    return dir;
  }

  std::vector<std::string> run_args(const std::string& spec_path, const std::string& dir) {
    return {supervisor(), "run",          "--spec",      spec_path,
            "--helper",   env().helper(), "--state-dir", dir};
  }

  // `run --detach` to completion: its one event (`started`) and exit status 0. Then, unless
  // `wait_for_probe` is false, the probe's report: the probe has its SIGTERM handler by then,
  // so a `stop` that follows gets the probe's own exit 0, not a death by SIGTERM (`started`
  // and, without an API socket, `ready` come before the probe has run at all).
  json::object detach(const ProbeSpec& spec, const std::string& dir, bool wait_for_probe = true) {
    forget_report(spec);
    auto run = start_run(write_spec(spec.json), {"--state-dir", dir, "--detach"});
    json::object started = run->expect_event("started");
    EXPECT_EQ(run->finish(), 0) << run->stderr_text();
    EXPECT_EQ(run->events().size(), 1u) << events_text(run->events());
    if (wait_for_probe) env().wait_for_report(spec.report);
    return started;
  }

  // `ps --json`'s line for `id` (empty if none).
  json::object ps_line(const std::string& dir, const std::string& id) {
    Output o = run_supervisor({"ps", "--state-dir", dir, "--json"});
    EXPECT_EQ(o.code, 0) << o.err;
    for (const auto& line : lines_of(o.out)) {
      json::object obj = parse_object(line);
      if (json_str(obj, "id") == id) return obj;
    }
    return {};
  }

  // Polls `ps` until `id` is in `state`; the last line seen.
  json::object wait_for_state(const std::string& dir, const std::string& id,
                              const std::string& state) {
    json::object line;
    const auto give_up = deadline_after(kTimeout);
    while (std::chrono::steady_clock::now() < give_up) {
      line = ps_line(dir, id);
      if (json_str(line, "state") == state) return line;
      std::this_thread::sleep_for(milliseconds(20));
    }
    ADD_FAILURE() << id << " never reached " << state << ": " << json::serialize(line);
    return line;
  }

  pid_t supervisor_pid_of(const std::string& dir, const std::string& id) {
    json::object state = parse_object(read_text_or_empty(dir + "/" + id + "/state.json"));
    return static_cast<pid_t>(json_int(state, "supervisor_pid"));
  }

  int dirs_ = 0;
};

// The manager dies: a manager process runs `run --detach` and is SIGKILLed while the VMM runs;
// a new process finds the sandbox `ready` in `ps`, replays its events from the first and then
// gets the live ones, stops it with `stop` (the VMM's status), and `wait` answers at once.
TEST_F(StateDirTest, AfterTheManagerIsKilledANewProcessReadoptsTheSandbox) {
  const HostSnapshot before = snapshot();
  const std::string dir = make_state_dir("readopt");
  ProbeSpec spec = probe_spec("readopt");
  auto manager = start_as_test_user({"/bin/sh", "-c", "\"$@\" --detach && exec sleep 600", "sh",
                                     supervisor(), "run", "--spec", write_spec(spec.json),
                                     "--helper", env().helper(), "--state-dir", dir});
  json::object started = manager->expect_event("started");
  ASSERT_EQ(kill(manager->pid(), SIGKILL), 0);
  EXPECT_EQ(manager->reap(), -SIGKILL);

  json::object ps = wait_for_state(dir, spec.id, "ready");
  const pid_t supervisor_pid = static_cast<pid_t>(json_int(ps, "supervisor_pid"));
  EXPECT_GT(supervisor_pid, 1);
  EXPECT_NE(supervisor_pid, manager->pid());
  EXPECT_TRUE(process_alive(supervisor_pid));
  EXPECT_EQ(json_int(ps, "vmm_pid"), json_int(started, "pid"));
  EXPECT_EQ(session_of(supervisor_pid), supervisor_pid) << "not in a session of its own";

  auto follower =
      start_as_test_user({supervisor(), "events", spec.id, "--state-dir", dir, "--follow"});
  json::object replayed = follower->expect_event("started");
  EXPECT_EQ(json::serialize(replayed), json::serialize(started));
  follower->expect_event("ready");

  Output stop = run_supervisor({"stop", spec.id, "--state-dir", dir});
  EXPECT_EQ(stop.code, 0) << stop.err;  // the probe exits 0 from its SIGTERM handler
  EXPECT_EQ(json_str(parse_object(stop.out), "event"), "exited") << stop.out;

  json::object stopping = follower->expect_event("stopping");
  EXPECT_EQ(json_str(stopping, "why"), "stop_request");
  EXPECT_EQ(json_str(stopping, "step"), "sigterm");
  json::object exited = follower->expect_event("exited");
  EXPECT_EQ(json_str(exited, "outcome"), "exited");
  EXPECT_EQ(json_int(exited, "code"), 0);
  EXPECT_EQ(follower->finish(), 0) << follower->stderr_text();

  Output wait = run_supervisor({"wait", spec.id, "--state-dir", dir});
  EXPECT_EQ(wait.code, 0) << wait.err;
  EXPECT_EQ(parse_object(wait.out), exited);
  EXPECT_EQ(json_str(ps_line(dir, spec.id), "state"), "exited");
  // The replay and the file agree with what the follower saw.
  Output events = run_supervisor({"events", spec.id, "--state-dir", dir});
  EXPECT_EQ(events.out, events_text(follower->events()));
  EXPECT_EQ(read_text_or_empty(dir + "/" + spec.id + "/events.jsonl"), events.out);
  EXPECT_FALSE(path_exists(dir + "/" + spec.id + "/control.sock"));
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
  expect_nothing_left(before);
  EXPECT_EQ(run_supervisor({"rm", spec.id, "--state-dir", dir}).code, 0);
  EXPECT_FALSE(path_exists(dir + "/" + spec.id));
}

// The VMM exits while no manager runs: exit.json holds its status, `ps` says exited, `wait`
// answers at once, `rm` removes the directory.
TEST_F(StateDirTest, AVmmThatExitsWithNoManagerLeavesItsStatus) {
  const std::string dir = make_state_dir("exits");
  ProbeSpec spec = probe_spec("exits", {"--exit-now", "--exit-code", "7"}, false);
  detach(spec, dir);
  json::object ps = wait_for_state(dir, spec.id, "exited");
  EXPECT_EQ(json_str(ps, "outcome"), "exited");
  EXPECT_EQ(json_int(ps, "exit_status"), 7);
  json::object exit_file = parse_object(read_text_or_empty(dir + "/" + spec.id + "/exit.json"));
  EXPECT_EQ(json_str(exit_file, "event"), "exited");
  EXPECT_EQ(json_int(exit_file, "code"), 7);
  Output wait = run_supervisor({"wait", spec.id, "--state-dir", dir});
  EXPECT_EQ(wait.code, 7) << wait.err;
  EXPECT_EQ(parse_object(wait.out), exit_file);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
  Output rm = run_supervisor({"rm", spec.id, "--state-dir", dir});
  EXPECT_EQ(rm.code, 0) << rm.err;
  EXPECT_FALSE(path_exists(dir + "/" + spec.id));
  // Control: a removed id is gone for every command.
  EXPECT_EQ(run_supervisor({"wait", spec.id, "--state-dir", dir}).code, 125);
  EXPECT_EQ(json::serialize(ps_line(dir, spec.id)), "{}");
}

// The supervisor is SIGKILLed: `ps` says lost, nothing of the sandbox is left, `wait` exits 125
// naming it, `rm` cleans up. Control: before the kill, `rm` of the live sandbox is refused.
TEST_F(StateDirTest, AKilledSupervisorIsReportedLost) {
  const std::string mounts = host_mounts();
  const std::string dir = make_state_dir("lost");
  ProbeSpec spec = probe_spec("lost", {"--children", "2"});
  spec.json["pid_namespace"] = true;
  json::object started = detach(spec, dir);
  // Back at `started`, `ps` already has the VMM's pid.
  EXPECT_EQ(json_int(ps_line(dir, spec.id), "vmm_pid"), json_int(started, "pid"));
  wait_for_state(dir, spec.id, "ready");
  auto follower =
      start_as_test_user({supervisor(), "events", spec.id, "--state-dir", dir, "--follow"});
  follower->expect_event("started");
  follower->expect_event("ready");
  Output rm_live = run_supervisor({"rm", spec.id, "--state-dir", dir});
  EXPECT_EQ(rm_live.code, 1);
  EXPECT_NE(rm_live.err.find("is live"), std::string::npos) << rm_live.err;
  EXPECT_TRUE(path_exists(dir + "/" + spec.id + "/state.json"));

  const pid_t supervisor_pid = supervisor_pid_of(dir, spec.id);
  ASSERT_GT(supervisor_pid, 1);
  ASSERT_EQ(kill(supervisor_pid, SIGKILL), 0);
  // The follower sees the stream end without `exited`, and says the sandbox is lost.
  EXPECT_EQ(follower->finish(), 1);
  EXPECT_NE(follower->stderr_text().find("is lost"), std::string::npos) << follower->stderr_text();
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
  EXPECT_EQ(json_str(wait_for_state(dir, spec.id, "lost"), "state"), "lost");
  Output wait = run_supervisor({"wait", spec.id, "--state-dir", dir});
  EXPECT_EQ(wait.code, 125);
  EXPECT_NE(wait.err.find("is lost"), std::string::npos) << wait.err;
  EXPECT_EQ(run_supervisor({"rm", spec.id, "--state-dir", dir}).code, 0);
  EXPECT_FALSE(path_exists(dir + "/" + spec.id));
  // The mounts went with the sandbox's namespace; its (empty) sandbox dir stays, as after any
  // killed supervisor: README says so.
  EXPECT_EQ(host_mounts(), mounts);
}

// Duplicate id: a second `run` of a live id is refused (125, naming the holder's pid) and
// changes nothing; so is a run over an exited sandbox's state until `rm`, after which the id
// runs again.
TEST_F(StateDirTest, ASecondRunOfALiveIdIsRefusedAndChangesNothing) {
  const std::string dir = make_state_dir("dup");
  ProbeSpec spec = probe_spec("dup", {}, false);
  const std::string spec_path = write_spec(spec.json);
  const pid_t vmm = static_cast<pid_t>(json_int(detach(spec, dir), "pid"));
  // The probe's report was there, so its SIGTERM handler is, with no wait: the `stop` below
  // is answered by the probe's exit 0.
  EXPECT_TRUE(wait_sigterm_disposition({vmm}, /*ignored=*/false, std::chrono::milliseconds(0)));
  wait_for_state(dir, spec.id, "ready");
  const std::string sandbox = dir + "/" + spec.id;
  const pid_t holder = supervisor_pid_of(dir, spec.id);
  auto files = [&] {
    std::string all;
    for (const char* f : {"lock", "state.json", "events.jsonl"}) {
      all += std::string(f) + ":" + read_text_or_empty(sandbox + "/" + f) + "\n";
    }
    return all;
  };
  const std::string before = files();
  Output second =
      run_supervisor({"run", "--spec", spec_path, "--helper", env().helper(), "--state-dir", dir});
  EXPECT_EQ(second.code, 125);
  EXPECT_NE(second.err.find("already run by the supervisor with pid " + std::to_string(holder)),
            std::string::npos)
      << second.err;
  EXPECT_EQ(second.out, "");
  EXPECT_EQ(files(), before);
  EXPECT_EQ(json_str(ps_line(dir, spec.id), "state"), "ready");

  EXPECT_EQ(run_supervisor({"stop", spec.id, "--state-dir", dir}).code, 0);
  Output over_exited = run_supervisor(
      {"run", "--spec", spec_path, "--helper", env().helper(), "--state-dir", dir, "--detach"});
  EXPECT_EQ(over_exited.code, 125);
  EXPECT_NE(over_exited.err.find("rm " + spec.id), std::string::npos) << over_exited.err;
  EXPECT_EQ(json_str(ps_line(dir, spec.id), "state"), "exited");
  // Control: once removed, the same id runs again.
  EXPECT_EQ(run_supervisor({"rm", spec.id, "--state-dir", dir}).code, 0);
  detach(spec, dir);
  EXPECT_EQ(run_supervisor({"stop", spec.id, "--state-dir", dir}).code, 0);
  EXPECT_EQ(run_supervisor({"rm", spec.id, "--state-dir", dir}).code, 0);
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
}

// Refusals by the control socket: another uid; the VMM inside, which can reach the socket's
// path (no jail, no `files`), with and without a PID namespace; oversized and malformed
// requests and too many of them. Each time the supervisor goes on serving, and its owner (the
// control) is served.
TEST_F(StateDirTest, TheControlSocketRefusesOthersAndTheVmmAndServesItsOwner) {
  const std::string dir = make_state_dir("refuse");
  for (bool pidns : {false, true}) {
    SCOPED_TRACE(pidns ? "with a PID namespace" : "without a PID namespace");
    ProbeSpec spec = probe_spec(pidns ? "refuse-pidns" : "refuse-plain");
    const std::string id = spec.id;
    const std::string sock = dir + "/" + id + "/control.sock";
    for (const char* arg : {"--control-request", sock.c_str()}) {
      spec.json["vmm"].as_object()["args"].as_array().emplace_back(arg);
    }
    spec.json["pid_namespace"] = pidns;
    detach(spec, dir);
    wait_for_state(dir, id, "ready");
    json::object report = env().wait_for_report(spec.report);
    const json::object* attempt =
        report.if_contains("control_request") ? &report.at("control_request").as_object() : nullptr;
    ASSERT_NE(attempt, nullptr) << json::serialize(report);
    EXPECT_EQ(json_int(*attempt, "errno"), 0) << "the VMM could not even reach the socket";
    const std::string reply = json_str(*attempt, "reply");
    EXPECT_NE(reply.find("refused"), std::string::npos) << reply;
    EXPECT_NE(reply.find(pidns ? "pid namespace" : "mnt namespace"), std::string::npos) << reply;
    EXPECT_EQ(json_str(ps_line(dir, id), "state"), "ready") << "the VMM's stop request acted";

    // Another uid (root) is refused; the owner, asking the same, is answered.
    auto as_root = talk_as(0, 0, sock, "{\"op\":\"state\"}\n", 1);
    ASSERT_EQ(as_root.size(), 1u);
    EXPECT_NE(as_root[0].find("not the owner's uid"), std::string::npos) << as_root[0];
    auto owner = talk_as(kTestUid, kTestGid, sock, "{\"op\":\"state\"}\n", 1);
    ASSERT_EQ(owner.size(), 1u);
    json::object state = parse_object(owner[0]);
    EXPECT_EQ(json_str(state, "state"), "ready") << owner[0];
    EXPECT_TRUE(state.at("ok").as_bool());

    // Oversized, malformed, unknown, then a good one on the same connection.
    auto oversized = talk_as(kTestUid, kTestGid, sock, std::string(5000, 'x') + "\n", 2);
    ASSERT_EQ(oversized.size(), 1u);
    EXPECT_NE(oversized[0].find("request longer than 4096 bytes"), std::string::npos);
    auto mixed = talk_as(kTestUid, kTestGid, sock,
                         "not json\n{\"op\":\"reboot\"}\n{\"op\":\"stop\",\"timeout_ms\":-1}\n"
                         "{\"op\":\"state\",\"evil\":1}\n{\"op\":\"state\"}\n",
                         5);
    ASSERT_EQ(mixed.size(), 5u) << ::testing::PrintToString(mixed);
    EXPECT_NE(mixed[0].find("not a JSON object"), std::string::npos) << mixed[0];
    EXPECT_NE(mixed[1].find("unknown op reboot"), std::string::npos) << mixed[1];
    EXPECT_NE(mixed[2].find("timeout_ms"), std::string::npos) << mixed[2];
    EXPECT_NE(mixed[3].find("unknown key evil"), std::string::npos) << mixed[3];
    EXPECT_EQ(json_str(parse_object(mixed[4]), "state"), "ready") << mixed[4];
    std::string many;
    for (int i = 0; i < 33; ++i) many += "{\"op\":\"state\"}\n";
    auto too_many = talk_as(kTestUid, kTestGid, sock, many, 40);
    ASSERT_EQ(too_many.size(), 33u);
    EXPECT_NE(too_many[32].find("more than 32 requests"), std::string::npos) << too_many[32];

    // Still serving: the owner stops it.
    Output stop = run_supervisor({"stop", id, "--state-dir", dir});
    EXPECT_EQ(stop.code, 0) << stop.err;
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
  }
}

// exit.json is never partial: supervisors SIGKILLed at spread instants around their last
// writes leave it absent or whole, never cut.
TEST_F(StateDirTest, ExitJsonIsAbsentOrWholeWhenTheSupervisorIsKilledAtTheEnd) {
  const std::string dir = make_state_dir("partial");
  int whole = 0, absent = 0;
  for (int i = 0; i < 30; ++i) {
    ProbeSpec spec =
        probe_spec("partial-" + std::to_string(i), {"--exit-now", "--exit-code", "3"}, false);
    // Not waiting for the probe: the kills must land before, during and after its exit.
    detach(spec, dir, false);
    const pid_t supervisor_pid = supervisor_pid_of(dir, spec.id);
    std::this_thread::sleep_for(std::chrono::microseconds(500 * (i % 15)));
    if (supervisor_pid > 1) kill(supervisor_pid, SIGKILL);
    EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
    const std::string file = dir + "/" + spec.id + "/exit.json";
    if (!path_exists(file)) {
      ++absent;
    } else {
      json::object exited = parse_object(read_text_or_empty(file));
      EXPECT_EQ(json_str(exited, "event"), "exited") << read_text_or_empty(file);
      EXPECT_EQ(json_int(exited, "exit_status"), 3);
      ++whole;
    }
    EXPECT_EQ(run_supervisor({"rm", spec.id, "--state-dir", dir}).code, 0);
  }
  std::cout << "exit.json whole " << whole << " times, absent " << absent << " times\n";
}

// A full state dir: the events still reach the events fd, the failure is logged once, and the
// sandbox runs and stops as usual.
TEST_F(StateDirTest, AFullStateDirLeavesTheSandboxAndItsEventsAlone) {
  const std::string dir = make_state_dir("full");
  ASSERT_EQ(mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
                  "size=64k,mode=0700,uid=64123,gid=64123"),
            0)
      << std::strerror(errno);
  struct Unmount {
    std::string dir;
    ~Unmount() { umount2(dir.c_str(), MNT_DETACH); }
  } unmount{dir};
  {
    std::ofstream fill(dir + "/filler");
    std::string block(4096, 'f');
    while (fill.write(block.data(), block.size()) && fill.flush()) {
    }
  }
  ProbeSpec spec = probe_spec("full", {}, false);
  auto run = start_run(write_spec(spec.json), {"--state-dir", dir});
  run->expect_event("started");
  run->expect_event("ready");
  env().wait_for_report(spec.report);
  run->terminate();
  run->expect_event("stopping");
  json::object exited = run->expect_event("exited");
  EXPECT_EQ(run->finish(), 0) << run->stderr_text();
  EXPECT_EQ(json_str(exited, "outcome"), "exited");
  const std::string err = run->stderr_text();
  size_t logged = 0;
  for (size_t at = 0;
       (at = err.find("later failures there are not logged", at)) != std::string::npos; ++at) {
    ++logged;
  }
  EXPECT_EQ(logged, 1u) << err;
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
}

// A datagram socket standing in for systemd's NOTIFY_SOCKET.
class NotifyListener {
 public:
  explicit NotifyListener(const std::string& path) : path_(path) {
    fd_.reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    EXPECT_EQ(bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    chmod(path.c_str(), 0777);
  }
  ~NotifyListener() { unlink(path_.c_str()); }
  // The next datagram containing `needle`, every datagram seen on the way appended to seen().
  bool wait_for(const std::string& needle, milliseconds timeout = kTimeout) {
    const auto give_up = deadline_after(timeout);
    while (std::chrono::steady_clock::now() < give_up) {
      pollfd pfd{fd_.get(), POLLIN, 0};
      if (poll(&pfd, 1, 50) != 1) continue;
      char buf[4096];
      ssize_t n = recv(fd_.get(), buf, sizeof(buf), 0);
      if (n <= 0) continue;
      seen_.emplace_back(buf, static_cast<size_t>(n));
      if (seen_.back().find(needle) != std::string::npos) return true;
    }
    return false;
  }
  const std::vector<std::string>& seen() const { return seen_; }

 private:
  std::string path_;
  UniqueFd fd_;
  std::vector<std::string> seen_;
};

// NOTIFY_SOCKET: READY=1 (with MAINPID) comes after the `ready` event, STOPPING=1 at the stop.
// Control: a sandbox that never gets ready sends no READY=1, and STOPPING=1 when not_ready
// stops it.
TEST_F(StateDirTest, SystemdHearsReadyAfterReadyAndStoppingAtTheStop) {
  NotifyListener notify(env().work() + "/notify.sock");
  ProbeSpec spec = probe_spec("notify");
  auto run = start_as_test_user({"/usr/bin/env", "NOTIFY_SOCKET=" + env().work() + "/notify.sock",
                                 supervisor(), "run", "--spec", write_spec(spec.json), "--helper",
                                 env().helper()});
  ASSERT_TRUE(notify.wait_for("READY=1")) << ::testing::PrintToString(notify.seen());
  // The ready event was written before READY=1 was sent: it is already there to read.
  run->expect_event("started");
  run->expect_event("ready", milliseconds(100));
  EXPECT_NE(notify.seen().back().find("MAINPID=" + std::to_string(run->pid())), std::string::npos)
      << notify.seen().back();
  env().wait_for_report(spec.report);
  run->terminate();
  EXPECT_TRUE(notify.wait_for("STOPPING=1")) << ::testing::PrintToString(notify.seen());
  run->expect_event("stopping");
  run->expect_event("exited");
  EXPECT_EQ(run->finish(), 0);

  NotifyListener never(env().work() + "/notify-never.sock");
  ProbeSpec late = probe_spec("notify-never", {}, false);
  late.json["api_socket"] = late.sandbox_dir + "/never.sock";
  late.json["ready_timeout_ms"] = 300;
  auto unready = start_as_test_user(
      {"/usr/bin/env", "NOTIFY_SOCKET=" + env().work() + "/notify-never.sock", supervisor(), "run",
       "--spec", write_spec(late.json), "--helper", env().helper()});
  ASSERT_TRUE(never.wait_for("STOPPING=1")) << ::testing::PrintToString(never.seen());
  unready->expect_event("started");
  EXPECT_EQ(json_str(unready->expect_event("stopping"), "why"), "not_ready");
  unready->expect_event("exited");
  unready->finish();
  for (const auto& d : never.seen()) EXPECT_EQ(d.find("READY=1"), std::string::npos) << d;
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
}

// Refusals before anything runs, each naming what is wrong and changing nothing: --detach
// without a state dir, a spec asking for inherited stdio with --detach, a state dir another
// user owns or others may write, a command without an id or a state dir, and `rm` or `wait`
// of an id that is not there.
TEST_F(StateDirTest, BadStateDirsAndCommandLinesAreRefusedNamingTheProblem) {
  ProbeSpec spec = probe_spec("refusals", {}, false);
  const std::string spec_path = write_spec(spec.json);
  const std::string dir = make_state_dir("refusals");
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"run", "--spec", spec_path, "--helper", env().helper()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_supervisor(args);
  };
  Output no_dir = run({"--detach"});
  EXPECT_EQ(no_dir.code, 2);
  EXPECT_NE(no_dir.err.find("--detach needs --state-dir"), std::string::npos) << no_dir.err;

  ProbeSpec inherit = probe_spec("refusals-inherit", {}, false);
  inherit.json["stdio"] = "inherit";
  Output inherited = run_supervisor({"run", "--spec", write_spec(inherit.json), "--helper",
                                     env().helper(), "--state-dir", dir, "--detach"});
  EXPECT_EQ(inherited.code, 125);
  EXPECT_NE(inherited.err.find("stdio: inherit cannot be used with --detach"), std::string::npos)
      << inherited.err;

  const std::string writable = make_state_dir("refusals-writable");
  ASSERT_EQ(chmod(writable.c_str(), 0770), 0);
  Output group_writable = run({"--state-dir", writable});
  EXPECT_EQ(group_writable.code, 125);
  EXPECT_NE(group_writable.err.find("mode 0770 lets others write it"), std::string::npos)
      << group_writable.err;

  const std::string roots = env().work() + "/state-refusals-root";
  ASSERT_EQ(mkdir(roots.c_str(), 0755), 0);
  Output not_mine = run({"--state-dir", roots});
  EXPECT_EQ(not_mine.code, 125);
  EXPECT_NE(not_mine.err.find("owned by uid 0, not by the caller"), std::string::npos)
      << not_mine.err;

  Output missing = run({"--state-dir", env().work() + "/no-such-dir"});
  EXPECT_EQ(missing.code, 125);
  EXPECT_NE(missing.err.find("No such file or directory"), std::string::npos) << missing.err;

  Output no_id = run_supervisor({"stop", "--state-dir", dir});
  EXPECT_EQ(no_id.code, 2);
  EXPECT_NE(no_id.err.find("stop needs a sandbox ID"), std::string::npos) << no_id.err;
  Output no_state = run_supervisor({"wait", "vm1"});
  EXPECT_EQ(no_state.code, 2);
  EXPECT_NE(no_state.err.find("wait needs --state-dir DIR"), std::string::npos) << no_state.err;
  Output rm_none = run_supervisor({"rm", "nothing-here", "--state-dir", dir});
  EXPECT_EQ(rm_none.code, 1);
  EXPECT_NE(rm_none.err.find("no sandbox nothing-here"), std::string::npos) << rm_none.err;
  Output wait_bad = run_supervisor({"wait", "../escape", "--state-dir", dir});
  EXPECT_EQ(wait_bad.code, 125);
  EXPECT_NE(wait_bad.err.find("sandbox id ../escape"), std::string::npos) << wait_bad.err;

  // Nothing was made: no sandbox state, no process.
  Output ps = run_supervisor({"ps", "--state-dir", dir, "--json"});
  EXPECT_EQ(ps.code, 0) << ps.err;
  EXPECT_EQ(ps.out, "");
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
}

// Scale: 200 detached sandboxes are all listed by `ps`, and `stop` on each leaves nothing.
TEST_F(StateDirTest, TwoHundredDetachedSandboxesAreListedAndStopped) {
  const HostSnapshot before = snapshot();
  const std::string dir = make_state_dir("scale");
  const int kSandboxes = rounds_of(200);
  std::vector<std::string> ids;
  for (int i = 0; i < kSandboxes; ++i) {
    ProbeSpec spec = probe_spec("scale-" + std::to_string(i), {}, false);
    json::object started = detach(spec, dir);
    ASSERT_EQ(json_str(started, "event"), "started");
    ids.push_back(spec.id);
  }
  Output ps = run_supervisor({"ps", "--state-dir", dir});
  ASSERT_EQ(ps.code, 0) << ps.err;
  const auto lines = lines_of(ps.out);
  ASSERT_EQ(lines.size(), kSandboxes + 1u) << ps.out.substr(0, 2000);
  int ready = 0;
  for (const auto& line : lines) ready += line.find(" ready ") != std::string::npos;
  EXPECT_EQ(ready, kSandboxes) << ps.out.substr(0, 2000);
  for (const auto& id : ids) {
    Output stop = run_supervisor({"stop", id, "--state-dir", dir});
    EXPECT_EQ(stop.code, 0) << id << ": " << stop.err;
  }
  EXPECT_TRUE(HelperEnv::wait_no_test_user_processes()) << "left: " << left_processes();
  Output after = run_supervisor({"ps", "--state-dir", dir, "--json"});
  int exited = 0;
  for (const auto& line : lines_of(after.out))
    exited += json_str(parse_object(line), "state") == "exited";
  EXPECT_EQ(exited, kSandboxes);
  expect_nothing_left(before);
}

}  // namespace
}  // namespace sbx::it

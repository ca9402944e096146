// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// Every key the supervisor's spec parser knows (supervisor/spec.cc), by object.
var specKeys = map[string][]string{
	"": {"id", "vmm", "mode", "sandbox_dir", "kernel", "rootfs", "snapshot", "netns",
		"api_socket", "stop_timeout_ms", "ready_timeout_ms", "pid_namespace", "env", "stdio",
		"files", "jail", "cgroup"},
	"vmm":   {"kind", "binary", "args", "graceful_stop"},
	"files": {"devices", "read_only", "read_write"},
	"cgroup": {"parent", "memory_max", "memory_high", "memory_swap_max", "cpu_max",
		"cpu_weight", "pids_max", "cpuset_cpus", "cpuset_mems", "io_weight"},
}

func keysOf(t *testing.T, v interface{}) []string {
	t.Helper()
	m, ok := v.(map[string]interface{})
	if !ok {
		t.Fatalf("not an object: %v", v)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestSpecHasEveryKeyWithTheSpecsNames(t *testing.T) {
	full := Spec{
		ID:             "vm-1",
		VMM:            VMM{Kind: KindQEMU, Binary: "/usr/bin/qemu", Args: []string{"-m", "256"}, GracefulStop: GracefulSystemPowerdown},
		Mode:           ModeRestore,
		SandboxDir:     "/run/sbx/vm-1",
		Kernel:         "/img/vmlinux",
		Rootfs:         "/img/rootfs.ext4",
		Snapshot:       map[string]string{"state": "/img/state"},
		Netns:          "sbx-1",
		APISocket:      "/run/sbx/vm-1.d/api.sock",
		StopTimeoutMs:  Ptr[uint32](0),
		ReadyTimeoutMs: Ptr[uint32](100),
		PIDNamespace:   Ptr(false),
		Jail:           true,
		Env:            map[string]string{"A": "b"},
		Stdio:          StdioNull,
		Files:          &Files{Devices: []string{"/dev/kvm"}, ReadOnly: []string{"/usr"}, ReadWrite: []string{"/run/sbx/vm-1.d"}},
		Cgroup: &Cgroup{Parent: "/sys/fs/cgroup/x", MemoryMax: LimitOf(1 << 30), MemoryHigh: NoLimit(),
			MemorySwapMax: LimitOf(0), CPUMax: "50000 100000", CPUWeight: Ptr[uint32](100),
			PidsMax: LimitOf(64), CpusetCpus: "0-1", CpusetMems: "0", IOWeight: Ptr[uint32](10)},
	}
	b, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]interface{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for obj, want := range specKeys {
		v := interface{}(m)
		if obj != "" {
			v = m[obj]
		}
		if got := keysOf(t, v); !reflect.DeepEqual(got, sorted(want)) {
			t.Errorf("%q keys: got %v, want %v", obj, got, sorted(want))
		}
	}
	cg := m["cgroup"].(map[string]interface{})
	if cg["memory_high"] != "max" || cg["memory_max"] != float64(1<<30) || cg["memory_swap_max"] != float64(0) {
		t.Errorf("cgroup limits: %v", cg)
	}
	if m["stop_timeout_ms"] != float64(0) || m["pid_namespace"] != false {
		t.Errorf("a zero that is set must be sent: %s", b)
	}
}

func TestUnsetKeysAreNotSent(t *testing.T) {
	b, err := json.Marshal(Spec{ID: "a", VMM: VMM{Kind: KindGeneric, Binary: "/bin/x"}, SandboxDir: "/run/sbx/a"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"a","vmm":{"kind":"generic","binary":"/bin/x"},"sandbox_dir":"/run/sbx/a"}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	// An empty files object is meaningful (confine to nothing more): it is sent.
	b, _ = json.Marshal(Spec{Files: &Files{}})
	if !strings.Contains(string(b), `"files":{}`) {
		t.Errorf("empty files not sent: %s", b)
	}
}

func TestLimitRoundTrips(t *testing.T) {
	for _, in := range []string{`"max"`, `0`, `536870912`} {
		var l Limit
		if err := json.Unmarshal([]byte(in), &l); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		out, _ := json.Marshal(l)
		if string(out) != in {
			t.Errorf("%s came back as %s", in, out)
		}
	}
	var l Limit
	if err := json.Unmarshal([]byte(`"lots"`), &l); err == nil {
		t.Error(`"lots" accepted as a limit`)
	}
}

func TestEventsFoldIntoAnExitStatus(t *testing.T) {
	stream := `{"event":"started","id":"vm-1","pid":4243,"pgid":4242,"t_ms":3,"landlock_abi":6}
{"event":"ready","id":"vm-1","t_ms":41}
{"event":"stopping","id":"vm-1","why":"SIGTERM","step":"graceful_request","t_ms":5000}
{"event":"stopping","id":"vm-1","why":"SIGTERM","step":"sigterm","t_ms":5012}
{"event":"stopping","id":"vm-1","why":"SIGTERM","step":"sigkill","t_ms":15012}
{"event":"exited","id":"vm-1","outcome":"killed_after_timeout","signal":9,"exit_status":137,"usage":{"cpu_usec":301245,"memory_peak_bytes":null,"oom_kills":0,"pids_peak":3},"t_ms":15020}
`
	var tr statusTracker
	var got []Event
	err := readEvents(strings.NewReader(stream), func(ev Event) {
		tr.observe(ev)
		got = append(got, ev)
	}, func(err error) { t.Error(err) })
	if err != nil || len(got) != 6 {
		t.Fatalf("read %d events, err %v", len(got), err)
	}
	if got[0].Type != EventStarted || got[0].PID != 4243 || got[0].PGID != 4242 || got[0].LandlockABI != 6 {
		t.Errorf("started: %+v", got[0])
	}
	if !strings.HasPrefix(string(got[1].Raw), `{"event":"ready"`) {
		t.Errorf("raw not kept: %s", got[1].Raw)
	}
	st := tr.status("exit status 137", 137)
	if st.Outcome != OutcomeKilledAfterTimeout || st.Signal != syscall.SIGKILL || st.ExitStatus != 137 ||
		st.Why != "SIGTERM" || st.StopStep != "sigkill" || st.ID != "vm-1" {
		t.Errorf("status: %+v", st)
	}
	if st.Usage == nil || *st.Usage.CPUUsec != 301245 || st.Usage.MemoryPeakBytes != nil || *st.Usage.PidsPeak != 3 {
		t.Errorf("usage: %+v", st.Usage)
	}
}

func TestSetupFailureAndMissingExit(t *testing.T) {
	var tr statusTracker
	ev, err := ParseEvent([]byte(`{"event":"exited","id":"x","outcome":"setup_failed","step":"validate_request","errno":1,"detail":"vmm /x is not allowed by the policy","exit_status":125,"t_ms":2}`))
	if err != nil {
		t.Fatal(err)
	}
	tr.observe(ev)
	st := tr.status("exit status 125", 125)
	if st.Outcome != OutcomeSetupFailed || st.Step != "validate_request" || st.Errno != syscall.EPERM ||
		st.ExitStatus != 125 || !strings.Contains(st.Detail, "not allowed") {
		t.Errorf("status: %+v", st)
	}
	var none statusTracker
	none.id = "y"
	st = none.status("signal: killed", 137)
	if st.Outcome != OutcomeLost || st.ID != "y" || !strings.Contains(st.Detail, "signal: killed") {
		t.Errorf("no exited event: %+v", st)
	}
	if _, err := ParseEvent([]byte(`{"id":"x"}`)); err == nil {
		t.Error("an event without a type was accepted")
	}
}

func TestSpecErrorsNameTheField(t *testing.T) {
	cases := map[string]SpecError{
		"sbx-supervisor: spec: vmm.kind: must be firecracker, cloud-hypervisor, qemu or generic": {Field: "vmm.kind", Reason: "must be firecracker, cloud-hypervisor, qemu or generic"},
		"sbx-supervisor: spec: env.LD_PRELOAD: LD_* and GCONV_* variables are refused":           {Field: "env.LD_PRELOAD", Reason: "LD_* and GCONV_* variables are refused"},
		"sbx-supervisor: spec: not valid JSON: syntax error":                                     {Reason: "not valid JSON: syntax error"},
		"sbx-supervisor: spec: larger than 1 MiB":                                                {Reason: "larger than 1 MiB"},
	}
	for line, want := range cases {
		got := parseSpecError([]string{"something else", line})
		if got == nil || *got != want {
			t.Errorf("%q: got %+v, want %+v", line, got, want)
		}
	}
	if parseSpecError([]string{"sbx-supervisor[x] error: refusing to run as uid 0"}) != nil {
		t.Error("a log line taken for a spec error")
	}
}

func TestSupervisorMessagePrefersItsOwnLine(t *testing.T) {
	usage := []string{"sbx-supervisor: --helper needs an absolute path",
		"usage: sbx-supervisor run --spec FILE|- [--helper PATH] [--events-fd N]",
		"        it (--json: one object). Exit 0 when everything needed is OK, else 1"}
	if got := supervisorMessage(usage); got != usage[0] {
		t.Errorf("got %q", got)
	}
	logged := []string{"sbx-supervisor[x] info: launching", "sbx-supervisor[x] error: refusing to run as uid 0 without --allow-root", ""}
	if got := supervisorMessage(logged); got != logged[1] {
		t.Errorf("got %q", got)
	}
	if got := supervisorMessage([]string{"a", "b", ""}); got != "b" {
		t.Errorf("got %q", got)
	}
}

func TestLaunchErrorMatchesItsErrnoAndSpecError(t *testing.T) {
	err := error(&LaunchError{ID: "x", Step: "validate_request", Errno: syscall.EPERM, ExitCode: 125})
	if !errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOENT) {
		t.Error("errors.Is on the errno")
	}
	if !strings.Contains(err.Error(), "validate_request") {
		t.Errorf("message: %v", err)
	}
	err = &LaunchError{ID: "x", Step: StepSpec, Field: "id", Err: &SpecError{Field: "id", Reason: "is required"}}
	var specErr *SpecError
	if !errors.As(err, &specErr) || specErr.Field != "id" {
		t.Errorf("errors.As: %v", err)
	}
}

func TestSupervisorEnvDropsNotifySocket(t *testing.T) {
	got := supervisorEnv([]string{"PATH=/bin", "NOTIFY_SOCKET=/run/systemd/notify", "HOME=/"})
	if want := []string{"PATH=/bin", "HOME=/"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
}

func TestSpecRefusalInTheLog(t *testing.T) {
	got := parseSpecError([]string{"sbx-supervisor[vm1] error: spec: stdio: inherit cannot be used with --detach (use null)"})
	if got == nil || got.Field != "stdio" || got.Reason != "inherit cannot be used with --detach (use null)" {
		t.Errorf("got %+v", got)
	}
	for _, l := range []string{"sbx-supervisor[vm1] error: refusing to run as uid 0 without --allow-root",
		"sbx-supervisor[vm 1] error: spec: x: y"} {
		if got := parseSpecError([]string{l}); got != nil {
			t.Errorf("%q taken for a spec error: %+v", l, got)
		}
	}
}

func TestLostErrorIsErrLost(t *testing.T) {
	var err error = &LostError{ID: "vm1", SupervisorPID: 42, Detail: "signal: killed"}
	var lost *LostError
	if !errors.Is(err, ErrLost) || !errors.As(err, &lost) || lost.SupervisorPID != 42 {
		t.Errorf("%v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"vm1"`) || !strings.Contains(msg, "pid 42") ||
		!strings.Contains(msg, "signal: killed") {
		t.Errorf("message %q", msg)
	}
}

func TestLineWriterHandsWholeLines(t *testing.T) {
	var out strings.Builder
	logs := newLogTail(&out)
	w := &lineWriter{logs: logs}
	for _, chunk := range []string{"sbx-supervisor: no", " sandbox x\nsecond", " line\n"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if out.String() != "sbx-supervisor: no sandbox x\nsecond line\n" {
		t.Errorf("log %q", out.String())
	}
	if lines := logs.lines; len(lines) != 2 || lines[0] != "sbx-supervisor: no sandbox x" {
		t.Errorf("kept %q", lines)
	}
}

func TestStateDirArgs(t *testing.T) {
	o := buildOptions([]Option{WithStateDir("/s"), WithDetach()})
	args, err := o.runArgs()
	if err != nil || strings.Join(args, " ") != "run --spec - --events-fd 3 --state-dir /s --detach" {
		t.Errorf("%q, %v", args, err)
	}
	if _, err := buildOptions([]Option{WithDetach()}).runArgs(); err == nil {
		t.Error("WithDetach without WithStateDir accepted")
	}
}

// SPDX-License-Identifier: Apache-2.0

// Package sbxtest is the environment of the package's integration tests: the real
// sbx-supervisor, a setcap'd copy of the test build's helper, the probe VMM, a sandbox root,
// images, a netns and a root-owned policy, all prepared by scripts/go-test.sh, which runs the
// tests as an unprivileged test user and says where everything is in SBX_GO_TEST_* variables.
//
// Without that environment a test is skipped with the reason, except under CI=true, where it
// fails: CI has every piece, so a missing one is a broken run, not a reason to pass.
package sbxtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sbx "sbx.dev/sbx/clients/go"
)

// Env is where scripts/go-test.sh put the pieces.
type Env struct {
	Supervisor  string // root-owned copy of sbx-supervisor
	Helper      string // the test build's sbx-nsexec, setcap cap_sys_admin,cap_audit_write+ep
	Probe       string // the probe VMM, allowed by the policy
	UnlistedVMM string // a copy of the probe the policy does not allow
	Sandboxes   string // the policy's sandbox_root: root, group the test user, 01770
	Images      string // the policy's image_root: vmlinux, rootfs.ext4, vmlinuz, initramfs.cpio.gz
	Work        string // owned by the test user: reports, API sockets
	Netns       string // allowed by the policy
	Tap         string // a TAP device in Netns owned by the test user, 192.0.2.1/24
	QEMU        string // allowed by the policy, with read_only /usr, the initramfs, /dev/net/tun
}

var (
	loadOnce  sync.Once
	loaded    *Env
	loadError string
	baseline  map[int]bool
	counter   atomic.Int64
)

// Load returns the environment, or skips the test (fails it under CI=true) when it is missing.
func Load(t testing.TB) *Env {
	t.Helper()
	loadOnce.Do(func() {
		var missing []string
		get := func(name string) string {
			v := os.Getenv(name)
			if v == "" {
				missing = append(missing, name)
			}
			return v
		}
		e := &Env{
			Supervisor:  get("SBX_GO_TEST_SUPERVISOR"),
			Helper:      get("SBX_GO_TEST_HELPER"),
			Probe:       get("SBX_GO_TEST_PROBE"),
			UnlistedVMM: get("SBX_GO_TEST_UNLISTED_VMM"),
			Sandboxes:   get("SBX_GO_TEST_SANDBOXES"),
			Images:      get("SBX_GO_TEST_IMAGES"),
			Work:        get("SBX_GO_TEST_WORK"),
			Netns:       get("SBX_GO_TEST_NETNS"),
			Tap:         get("SBX_GO_TEST_TAP"),
			QEMU:        get("SBX_GO_TEST_QEMU"),
		}
		if len(missing) > 0 {
			loadError = "the integration environment is missing (" + strings.Join(missing, ", ") +
				" not set): run scripts/go-test.sh as root"
			return
		}
		for _, p := range []string{e.Supervisor, e.Helper, e.Probe, e.UnlistedVMM, e.Sandboxes,
			e.Images, e.Work} {
			if _, err := os.Stat(p); err != nil {
				loadError = "the integration environment is incomplete: " + err.Error()
				return
			}
		}
		loaded = e
		baseline = map[int]bool{}
		for _, pid := range OwnProcesses() {
			baseline[pid] = true
		}
	})
	if loaded == nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: a missing environment fails)", loadError)
		}
		t.Skip(loadError)
	}
	t.Cleanup(func() { ExpectNothingLeft(t) })
	return loaded
}

// Options are the supervisor and helper of the environment, plus extra.
func (e *Env) Options(extra ...sbx.Option) []sbx.Option {
	return append([]sbx.Option{sbx.WithSupervisor(e.Supervisor), sbx.WithHelper(e.Helper)},
		extra...)
}

// NewID returns a sandbox id unique in this run.
func NewID(tag string) string {
	return fmt.Sprintf("go-%s-%d-%d", tag, os.Getpid(), counter.Add(1))
}

// Probe is a spec for the probe VMM and where it reports.
type Probe struct {
	Spec   sbx.Spec
	Report string // the probe's JSON report, written once it runs
}

// ProbeSpec is a spec that launches the probe (kind generic) in the env's netns with the
// images linked, under the default PID namespace, its flags after --report. With apiSocket the
// probe listens on a socket in Work and the sandbox is ready once it accepts; without one, at
// once.
func (e *Env) ProbeSpec(tag string, apiSocket bool, flags ...string) Probe {
	id := NewID(tag)
	report := filepath.Join(e.Work, "report-"+id+".json")
	args := []string{"--report", report}
	spec := sbx.Spec{
		ID:             id,
		SandboxDir:     filepath.Join(e.Sandboxes, id),
		Kernel:         filepath.Join(e.Images, "vmlinux"),
		Rootfs:         filepath.Join(e.Images, "rootfs.ext4"),
		Netns:          e.Netns,
		Env:            map[string]string{"SBX_TEST": "1", "PATH": "/usr/bin"},
		StopTimeoutMs:  sbx.Ptr[uint32](10000),
		ReadyTimeoutMs: sbx.Ptr[uint32](10000),
	}
	if apiSocket {
		spec.APISocket = filepath.Join(e.Work, "api-"+id+".sock")
		args = append(args, "--api-sock", spec.APISocket)
	}
	spec.VMM = sbx.VMM{Kind: sbx.KindGeneric, Binary: e.Probe, Args: append(args, flags...)}
	return Probe{Spec: spec, Report: report}
}

// WaitForFile waits until path exists.
func WaitForFile(t testing.TB, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Lstat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %v", path, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitSigterm waits until pid ignores SIGTERM (ignored) or catches it: the probe sets its
// disposition only after its report, and a signal before that would end it differently.
func WaitSigterm(t testing.TB, pid int, ignored bool) {
	t.Helper()
	key := "SigCgt:"
	if ignored {
		key = "SigIgn:"
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if mask, ok := statusField(pid, key); ok {
			bits, err := strconv.ParseUint(mask, 16, 64)
			if err == nil && bits&(1<<(uint(syscall.SIGTERM)-1)) != 0 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d did not set its SIGTERM disposition (%s) in time", pid, key)
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	state, ok := statusField(pid, "State:")
	return ok && !strings.HasPrefix(state, "Z")
}

func statusField(pid int, key string) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			return strings.TrimSpace(strings.TrimPrefix(line, key)), true
		}
	}
	return "", false
}

// OwnProcesses lists the processes whose real uid is this process's, but for this process and
// its ancestors (the go command that runs the tests).
func OwnProcesses() []int {
	uid := strconv.Itoa(os.Getuid())
	skip := map[int]bool{}
	for pid := os.Getpid(); pid > 1; {
		skip[pid] = true
		ppid, ok := statusField(pid, "PPid:")
		if !ok {
			break
		}
		pid, _ = strconv.Atoi(ppid)
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] {
			continue
		}
		ids, ok := statusField(pid, "Uid:")
		if !ok {
			continue
		}
		if f := strings.Fields(ids); len(f) > 0 && f[0] == uid {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// Leftovers are the processes of the test user that were not there when the tests began.
func Leftovers() []int {
	var out []int
	for _, pid := range OwnProcesses() {
		if !baseline[pid] {
			out = append(out, pid)
		}
	}
	return out
}

// ExpectNothingLeft fails the test when a process of the test user it started is still there
// a few seconds on, naming each, and then kills them so the next test starts clean.
func ExpectNothingLeft(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := Leftovers()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var names []string
			for _, pid := range left {
				cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
				names = append(names, fmt.Sprintf("%d %q", pid,
					strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")))
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Errorf("processes left behind: %s", strings.Join(names, "; "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SandboxRoot lists the sandbox root, for "nothing was made or left there".
func (e *Env) SandboxRoot(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(e.Sandboxes)
	if err != nil {
		t.Fatalf("list %s: %v", e.Sandboxes, err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

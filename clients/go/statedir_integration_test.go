// SPDX-License-Identifier: Apache-2.0

package sbx_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	sbx "sbx.dev/sbx/clients/go"
	"sbx.dev/sbx/clients/go/internal/sbxtest"
)

// A test binary run with managerSpecEnv set is not a test run but a VM manager: it starts the
// spec detached in the state dir managerDirEnv, prints "ready VMM-PID SUPERVISOR-PID" and
// waits to be killed.
const (
	managerSpecEnv = "SBX_GO_TEST_MANAGER_SPEC"
	managerDirEnv  = "SBX_GO_TEST_MANAGER_STATE_DIR"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(managerSpecEnv); spec != "" {
		os.Exit(runManager(spec, os.Getenv(managerDirEnv)))
	}
	os.Exit(m.Run())
}

func runManager(specJSON, stateDir string) int {
	var spec sbx.Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Printf("error: spec: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := sbx.Start(ctx, spec, sbx.WithSupervisor(os.Getenv("SBX_GO_TEST_SUPERVISOR")),
		sbx.WithHelper(os.Getenv("SBX_GO_TEST_HELPER")), sbx.WithStateDir(stateDir),
		sbx.WithDetach())
	if err != nil {
		fmt.Printf("error: Start: %v\n", err)
		return 1
	}
	fmt.Printf("ready %d %d\n", sb.PID(), sb.SupervisorPID())
	select {} // until SIGKILL
}

// stateDir makes a state directory for one test, removed at its end.
func stateDir(t *testing.T, env *sbxtest.Env) string {
	t.Helper()
	dir := filepath.Join(env.Work, "state-"+sbxtest.NewID("dir"))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func find(t *testing.T, env *sbxtest.Env, dir, id string) (sbx.Status, bool) {
	t.Helper()
	all, err := sbx.List(timeout(t, 10*time.Second), dir, env.Options()...)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, st := range all {
		if st.ID == id {
			return st, true
		}
	}
	return sbx.Status{}, false
}

// expectEmpty checks that nothing is left in the state dir and the sandbox root of id.
func expectEmpty(t *testing.T, dir string, p sbxtest.Probe) {
	t.Helper()
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("state dir %s holds %v (%v)", dir, entries, err)
	}
	if _, err := os.Lstat(p.Spec.SandboxDir); !os.IsNotExist(err) {
		t.Errorf("sandbox dir %s left: %v", p.Spec.SandboxDir, err)
	}
}

func TestAttachAfterTheManagerWasKilled(t *testing.T) {
	env := sbxtest.Load(t)
	dir := stateDir(t, env)
	p := env.ProbeSpec("adopt", true)
	specJSON, err := json.Marshal(p.Spec)
	if err != nil {
		t.Fatal(err)
	}

	// The first manager: this test binary again, which starts the sandbox detached.
	manager := exec.Command(os.Args[0], "-test.run=^$")
	manager.Env = append(os.Environ(), managerSpecEnv+"="+string(specJSON), managerDirEnv+"="+dir)
	manager.Stderr = os.Stderr
	out, err := manager.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := manager.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Scan()
		lines <- sc.Text()
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		_ = manager.Process.Kill()
		t.Fatal("the manager did not start its sandbox in 30 s")
	}
	var vmmPID, supervisorPID int
	if _, err := fmt.Sscanf(line, "ready %d %d", &vmmPID, &supervisorPID); err != nil {
		_ = manager.Process.Kill()
		_ = manager.Wait()
		t.Fatalf("the manager said %q", line)
	}
	// SIGKILL: nothing of it runs on, and the sandbox does not notice.
	if err := manager.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = manager.Wait()
	if !sbxtest.Alive(vmmPID) || !sbxtest.Alive(supervisorPID) {
		t.Fatalf("the sandbox did not outlive its manager (VMM %d, supervisor %d)", vmmPID, supervisorPID)
	}

	// The second manager: List, then Attach.
	st, ok := find(t, env, dir, p.Spec.ID)
	if !ok || st.State != sbx.StateReady || !st.Live() || st.SupervisorPID != supervisorPID ||
		st.VMMPID != vmmPID || st.Age <= 0 || st.Age > time.Minute || st.Outcome != "" {
		t.Errorf("List: %+v (found %v), want ready, supervisor %d, VMM %d", st, ok, supervisorPID, vmmPID)
	}
	var log syncBuffer
	sb, err := sbx.Attach(timeout(t, 30*time.Second), dir, p.Spec.ID, env.Options(sbx.WithLogOutput(&log))...)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { _, _ = sb.Stop(context.Background()) })
	if sb.ID() != p.Spec.ID || sb.PID() != vmmPID || sb.SupervisorPID() != supervisorPID ||
		sb.PGID() == sb.PID() || sb.PGID() <= 1 {
		t.Errorf("attached: id %q, pid %d, pgid %d, supervisor %d", sb.ID(), sb.PID(), sb.PGID(),
			sb.SupervisorPID())
	}
	select {
	case <-sb.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the replayed ready event did not come")
	}
	select {
	case <-sb.Exited():
		t.Fatal("Exited closed while the sandbox runs")
	default:
	}

	sbxtest.WaitSigterm(t, vmmPID, false)
	stopped, err := sb.Stop(timeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	want := sbx.ExitStatus{ID: p.Spec.ID, Outcome: sbx.OutcomeExited, Why: "stop_request",
		StopStep: "sigterm"}
	if !reflect.DeepEqual(stopped, want) {
		t.Errorf("Stop: %+v, want %+v", stopped, want)
	}
	// The events from the first, replayed and then live, each once.
	got := types(events(sb))
	wantTypes := []sbx.EventType{sbx.EventStarted, sbx.EventReady, sbx.EventStopping, sbx.EventExited}
	if !reflect.DeepEqual(got, wantTypes) {
		t.Errorf("events %v, want %v", got, wantTypes)
	}
	if sbxtest.Alive(vmmPID) {
		t.Error("the VMM is still there after Stop")
	}
	if again, err := sb.Stop(context.Background()); err != nil || !reflect.DeepEqual(again, stopped) {
		t.Errorf("Stop after the end: %+v, %v", again, err)
	}

	// A third manager finds it exited; Wait answers at once, with the same status.
	st, ok = find(t, env, dir, p.Spec.ID)
	if !ok || st.State != sbx.StateExited || st.Live() || st.Outcome != sbx.OutcomeExited || st.ExitStatus != 0 {
		t.Errorf("List after the stop: %+v (found %v)", st, ok)
	}
	began := time.Now()
	late, err := sbx.Attach(timeout(t, 10*time.Second), dir, p.Spec.ID, env.Options()...)
	if err != nil {
		t.Fatalf("Attach to the exited sandbox: %v", err)
	}
	st2, err := late.Wait(timeout(t, 10*time.Second))
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("Attach and Wait on an exited sandbox took %v", took)
	}
	if err != nil || !reflect.DeepEqual(st2, stopped) {
		t.Errorf("Wait on the exited sandbox: %+v, %v; Stop gave %+v", st2, err, stopped)
	}
	if got := types(events(late)); !reflect.DeepEqual(got, wantTypes) {
		t.Errorf("replayed events %v, want %v", got, wantTypes)
	}
	if late.PID() != vmmPID {
		t.Errorf("replayed pid %d, want %d", late.PID(), vmmPID)
	}

	if err := sbx.Remove(timeout(t, 10*time.Second), dir, p.Spec.ID, env.Options()...); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := sbx.Attach(timeout(t, 10*time.Second), dir, p.Spec.ID, env.Options()...); !errors.Is(err, sbx.ErrNotFound) {
		t.Errorf("Attach after Remove: %v", err)
	}
	expectEmpty(t, dir, p)
}

func TestLostSandboxIsATypedError(t *testing.T) {
	env := sbxtest.Load(t)
	dir := stateDir(t, env)
	p := env.ProbeSpec("lost", true)
	sb := start(t, env, p, sbx.WithStateDir(dir), sbx.WithDetach())
	if sb.SupervisorPID() <= 1 {
		t.Fatalf("no supervisor pid: %d", sb.SupervisorPID())
	}
	if err := syscall.Kill(sb.SupervisorPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, err := sb.Wait(timeout(t, 30*time.Second))
	var lost *sbx.LostError
	if !errors.As(err, &lost) || !errors.Is(err, sbx.ErrLost) || lost.ID != p.Spec.ID ||
		lost.SupervisorPID != sb.SupervisorPID() {
		t.Errorf("Wait: %v, want a *LostError", err)
	}
	if st.Outcome != sbx.OutcomeLost || st.ExitStatus != 125 {
		t.Errorf("status %+v", st)
	}
	if s, ok := find(t, env, dir, p.Spec.ID); !ok || s.State != sbx.StateLost || s.Live() {
		t.Errorf("List: %+v (found %v)", s, ok)
	}
	if _, err := sbx.Attach(timeout(t, 10*time.Second), dir, p.Spec.ID, env.Options()...); !errors.As(err, &lost) {
		t.Errorf("Attach to a lost sandbox: %v, want a *LostError", err)
	}
	if sbxtest.Alive(sb.PID()) {
		t.Error("the VMM outlived its supervisor")
	}
	if err := sbx.Remove(timeout(t, 10*time.Second), dir, p.Spec.ID, env.Options()...); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("state dir %s holds %v (%v)", dir, entries, err)
	}
	// A lost sandbox's (empty) sandbox dir stays: the supervisor was not there to remove it.
	os.Remove(p.Spec.SandboxDir)
}

func TestStateDirRunChildAttachedBeside(t *testing.T) {
	env := sbxtest.Load(t)
	dir := stateDir(t, env)
	p := env.ProbeSpec("beside", true)
	// Not detached: the supervisor is this process's child, and another follower can attach.
	sb := start(t, env, p, sbx.WithStateDir(dir))
	other, err := sbx.Attach(timeout(t, 30*time.Second), dir, p.Spec.ID,
		env.Options(sbx.WithStopTimeout(5*time.Second))...)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if other.PID() != sb.PID() || other.SupervisorPID() != sb.SupervisorPID() {
		t.Errorf("attached pid %d supervisor %d, started %d %d", other.PID(), other.SupervisorPID(),
			sb.PID(), sb.SupervisorPID())
	}
	sbxtest.WaitSigterm(t, sb.PID(), false)
	viaAttach, err := other.Stop(timeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("Stop through the attached sandbox: %v", err)
	}
	viaChild, err := sb.Wait(timeout(t, 30*time.Second))
	if err != nil || !reflect.DeepEqual(viaChild, viaAttach) || viaAttach.Why != "stop_request" ||
		viaAttach.Outcome != sbx.OutcomeExited {
		t.Errorf("run child: %+v, %v; attached: %+v", viaChild, err, viaAttach)
	}
	if err := sbx.Remove(timeout(t, 10*time.Second), dir, p.Spec.ID, env.Options()...); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	expectEmpty(t, dir, p)
}

func TestDetachedLaunchFailuresLeaveNoState(t *testing.T) {
	env := sbxtest.Load(t)
	dir := stateDir(t, env)
	before := env.SandboxRoot(t)
	opts := env.Options(sbx.WithStateDir(dir), sbx.WithDetach())

	// The policy refuses the VMM: the helper's step, and the state the launch made removed.
	p := env.ProbeSpec("detrefused", true)
	p.Spec.VMM.Binary = env.UnlistedVMM
	_, err := sbx.Start(timeout(t, 30*time.Second), p.Spec, opts...)
	var le *sbx.LaunchError
	if !errors.As(err, &le) || le.Step != "validate_request" || le.Errno != syscall.EPERM ||
		le.ExitCode != 125 {
		t.Errorf("refused VMM: %v", err)
	}

	// Inherited stdio cannot go with --detach: the supervisor refuses the spec's field.
	p = env.ProbeSpec("detinherit", true)
	p.Spec.Stdio = sbx.StdioInherit
	_, err = sbx.Start(timeout(t, 30*time.Second), p.Spec, opts...)
	if !errors.As(err, &le) || le.Step != sbx.StepSpec || le.Field != "stdio" || le.ExitCode != 125 {
		t.Errorf("stdio inherit: %v", err)
	}

	// The VMM ends before it is ready: StepReady, its status, and no state.
	p = env.ProbeSpec("detnotready", false, "--exit-now", "--exit-code", "3")
	p.Spec.APISocket = env.Work + "/never-" + p.Spec.ID + ".sock"
	_, err = sbx.Start(timeout(t, 30*time.Second), p.Spec, opts...)
	if !errors.As(err, &le) || le.Step != sbx.StepReady || le.Status == nil || le.Status.Code != 3 {
		t.Errorf("not ready: %v", err)
	}

	// A detached start needs a state dir.
	if _, err := sbx.Start(timeout(t, 10*time.Second), p.Spec, env.Options(sbx.WithDetach())...); err == nil ||
		!strings.Contains(err.Error(), "WithStateDir") {
		t.Errorf("WithDetach alone: %v", err)
	}

	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("state dir %s holds %v (%v)", dir, entries, err)
	}
	if after := env.SandboxRoot(t); !reflect.DeepEqual(after, before) {
		t.Errorf("sandbox root changed: %v -> %v", before, after)
	}
	// Nothing runs on. A detached supervisor is not this process's child: having let go of its
	// lock it is exiting, and its zombie then waits for its reaper (init), which Load's check
	// at the end waits for.
	deadline := time.Now().Add(time.Second)
	for {
		var running []string
		for _, pid := range sbxtest.Leftovers() {
			if sbxtest.Alive(pid) {
				stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				running = append(running, string(stat))
			}
		}
		if len(running) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left running: %s", strings.Join(running, "; "))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

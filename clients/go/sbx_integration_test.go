// SPDX-License-Identifier: Apache-2.0

package sbx_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sbx "sbx.dev/sbx/clients/go"
	"sbx.dev/sbx/clients/go/internal/sbxtest"
)

// syncBuffer is a log output the tests read while the supervisor writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// start launches p and fails the test on error; the sandbox is stopped at the end of the test
// if it still runs.
func start(t *testing.T, env *sbxtest.Env, p sbxtest.Probe, opts ...sbx.Option) *sbx.Sandbox {
	t.Helper()
	sb, err := sbx.Start(timeout(t, 30*time.Second), p.Spec, env.Options(opts...)...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _, _ = sb.Stop(context.Background()) })
	return sb
}

func events(sb *sbx.Sandbox) []sbx.Event {
	var out []sbx.Event
	for ev := range sb.Events() {
		out = append(out, ev)
	}
	return out
}

func types(evs []sbx.Event) []sbx.EventType {
	var out []sbx.EventType
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

func TestStartReadyStopGivesExited(t *testing.T) {
	env := sbxtest.Load(t)
	p := env.ProbeSpec("stop", true)
	var log syncBuffer
	sb := start(t, env, p, sbx.WithLogOutput(&log))
	if sb.ID() != p.Spec.ID {
		t.Errorf("ID %q, want %q", sb.ID(), p.Spec.ID)
	}
	if sb.PID() <= 1 || !sbxtest.Alive(sb.PID()) {
		t.Fatalf("PID %d is not a live VMM", sb.PID())
	}
	if sb.PGID() == sb.PID() {
		t.Errorf("under a PID namespace the group is the init's, got pgid = pid = %d", sb.PID())
	}
	select {
	case <-sb.Exited():
		t.Fatal("Exited closed while the sandbox runs")
	default:
	}
	sbxtest.WaitForFile(t, p.Report, 10*time.Second)
	sbxtest.WaitSigterm(t, sb.PID(), false)

	st, err := sb.Stop(timeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// The probe catches SIGTERM and exits 0; generic has no graceful request.
	want := sbx.ExitStatus{ID: p.Spec.ID, Outcome: sbx.OutcomeExited, Code: 0, Why: "SIGTERM",
		StopStep: "sigterm", ExitStatus: 0}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("status %+v, want %+v", st, want)
	}
	if !st.Success() {
		t.Errorf("Success() false for %v", st)
	}
	select {
	case <-sb.Exited():
	default:
		t.Error("Exited not closed after Stop returned")
	}
	got := types(events(sb))
	wantTypes := []sbx.EventType{sbx.EventStarted, sbx.EventReady, sbx.EventStopping, sbx.EventExited}
	if !reflect.DeepEqual(got, wantTypes) {
		t.Errorf("events %v, want %v", got, wantTypes)
	}
	if sbxtest.Alive(sb.PID()) || sbxtest.Alive(sb.SupervisorPID()) {
		t.Error("the VMM or the supervisor is still there")
	}
	if _, err := os.Lstat(p.Spec.SandboxDir); !os.IsNotExist(err) {
		t.Errorf("sandbox dir %s left: %v", p.Spec.SandboxDir, err)
	}
	if !strings.Contains(log.String(), "launching "+env.Probe) {
		t.Errorf("the supervisor's log did not reach WithLogOutput:\n%s", log.String())
	}
}

func TestFailingSpecNamesTheField(t *testing.T) {
	env := sbxtest.Load(t)
	before := env.SandboxRoot(t)
	for field, mutate := range map[string]func(*sbx.Spec){
		"vmm.kind":       func(s *sbx.Spec) { s.VMM.Kind = "bochs" },
		"env.LD_PRELOAD": func(s *sbx.Spec) { s.Env["LD_PRELOAD"] = "/tmp/x.so" },
		"stop_timeout_ms": func(s *sbx.Spec) {
			s.StopTimeoutMs = sbx.Ptr[uint32](3600*1000 + 1)
		},
	} {
		p := env.ProbeSpec("badspec", true)
		mutate(&p.Spec)
		sb, err := sbx.Start(timeout(t, 30*time.Second), p.Spec, env.Options()...)
		if sb != nil {
			t.Errorf("%s: Start gave a sandbox", field)
			_, _ = sb.Stop(context.Background())
			continue
		}
		var le *sbx.LaunchError
		if !errors.As(err, &le) {
			t.Fatalf("%s: not a *LaunchError: %v", field, err)
		}
		if le.Step != sbx.StepSpec || le.Field != field || le.ExitCode != 125 || le.Detail == "" {
			t.Errorf("%s: %+v", field, le)
		}
		var se *sbx.SpecError
		if !errors.As(err, &se) || se.Field != field {
			t.Errorf("%s: no *SpecError in %v", field, err)
		}
		// Check says the same without launching anything.
		_, err = sbx.Check(timeout(t, 10*time.Second), p.Spec, env.Options()...)
		if !errors.As(err, &se) || se.Field != field {
			t.Errorf("%s: Check: %v", field, err)
		}
	}
	if after := env.SandboxRoot(t); !reflect.DeepEqual(after, before) {
		t.Errorf("sandbox root changed: %v -> %v", before, after)
	}
}

func TestPolicyRefusalNamesTheStepAndLeavesNothing(t *testing.T) {
	env := sbxtest.Load(t)
	before := env.SandboxRoot(t)
	p := env.ProbeSpec("refused", true)
	p.Spec.VMM.Binary = env.UnlistedVMM
	var log syncBuffer
	sb, err := sbx.Start(timeout(t, 30*time.Second), p.Spec, env.Options(sbx.WithLogOutput(&log))...)
	if sb != nil {
		_, _ = sb.Stop(context.Background())
		t.Fatal("the policy let an unlisted VMM run")
	}
	var le *sbx.LaunchError
	if !errors.As(err, &le) {
		t.Fatalf("not a *LaunchError: %v", err)
	}
	if le.Step != "validate_request" || le.Errno != syscall.EPERM || le.ExitCode != 125 ||
		!strings.Contains(le.Detail, env.UnlistedVMM) {
		t.Errorf("LaunchError %+v", le)
	}
	if !errors.Is(err, syscall.EPERM) {
		t.Errorf("errors.Is(err, EPERM) false for %v", err)
	}
	if le.Status == nil || le.Status.Outcome != sbx.OutcomeSetupFailed {
		t.Errorf("status %+v", le.Status)
	}
	// Start returned after the supervisor was reaped: nothing of the test user is left now.
	if left := sbxtest.Leftovers(); len(left) != 0 {
		t.Errorf("processes left when Start returned: %v", left)
	}
	if after := env.SandboxRoot(t); !reflect.DeepEqual(after, before) {
		t.Errorf("sandbox root changed: %v -> %v", before, after)
	}
	if !strings.Contains(log.String(), "validate_request") {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestContextAfterStartDoesNotStopTheVM(t *testing.T) {
	env := sbxtest.Load(t)
	p := env.ProbeSpec("ctxafter", true)
	ctx, cancel := context.WithCancel(context.Background())
	sb, err := sbx.Start(ctx, p.Spec, env.Options()...)
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _, _ = sb.Stop(context.Background()) })
	cancel()
	select {
	case <-sb.Exited():
		t.Fatal("the sandbox ended when the start context was cancelled")
	case <-time.After(500 * time.Millisecond):
	}
	if !sbxtest.Alive(sb.PID()) {
		t.Fatal("the VMM is gone")
	}
	// Wait with a context of its own gives up; the sandbox does not care.
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	if _, err := sb.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait: %v", err)
	}
	if !sbxtest.Alive(sb.PID()) {
		t.Fatal("the VMM is gone after Wait gave up")
	}
	sbxtest.WaitSigterm(t, sb.PID(), false)
	st, err := sb.Stop(timeout(t, 30*time.Second))
	if err != nil || st.Outcome != sbx.OutcomeExited || st.Why != "SIGTERM" {
		t.Errorf("Stop: %+v, %v", st, err)
	}
}

func TestContextDuringStartStopsTheSandbox(t *testing.T) {
	env := sbxtest.Load(t)
	before := env.SandboxRoot(t)
	// The spec names an API socket the probe never opens: the sandbox runs but is never ready.
	p := env.ProbeSpec("ctxduring", false)
	p.Spec.APISocket = env.Work + "/never-" + p.Spec.ID + ".sock"
	p.Spec.ReadyTimeoutMs = sbx.Ptr[uint32](60000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Cancelled once the VMM runs (its report is written), well before the ready timeout.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Lstat(p.Report); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	began := time.Now()
	sb, err := sbx.Start(ctx, p.Spec, env.Options()...)
	if sb != nil {
		_, _ = sb.Stop(context.Background())
		t.Fatal("Start gave a sandbox that was never ready")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want context.Canceled", err)
	}
	if _, statErr := os.Lstat(p.Report); statErr != nil {
		t.Fatalf("the VMM never ran, so this tested nothing: %v", statErr)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("Start took %v: the stop waited for the ready timeout?", took)
	}
	if left := sbxtest.Leftovers(); len(left) != 0 {
		t.Errorf("processes left when Start returned: %v", left)
	}
	if after := env.SandboxRoot(t); !reflect.DeepEqual(after, before) {
		t.Errorf("sandbox root changed: %v -> %v", before, after)
	}
}

func TestNotReadyInTimeIsALaunchErrorAtReady(t *testing.T) {
	env := sbxtest.Load(t)
	p := env.ProbeSpec("notready", false)
	p.Spec.APISocket = env.Work + "/never-" + p.Spec.ID + ".sock"
	p.Spec.ReadyTimeoutMs = sbx.Ptr[uint32](300)
	sb, err := sbx.Start(timeout(t, 30*time.Second), p.Spec, env.Options()...)
	if sb != nil {
		_, _ = sb.Stop(context.Background())
		t.Fatal("Start gave a sandbox that was never ready")
	}
	var le *sbx.LaunchError
	if !errors.As(err, &le) {
		t.Fatalf("not a *LaunchError: %v", err)
	}
	if le.Step != sbx.StepReady || le.Status == nil || le.Status.Why != "not_ready" ||
		le.Status.Outcome == sbx.OutcomeSetupFailed || le.ExitCode != le.Status.ExitStatus {
		t.Errorf("LaunchError %+v, status %+v", le, le.Status)
	}
	if left := sbxtest.Leftovers(); len(left) != 0 {
		t.Errorf("processes left when Start returned: %v", left)
	}
}

func TestWaitFromManyGoroutinesGivesOneStatus(t *testing.T) {
	env := sbxtest.Load(t)
	p := env.ProbeSpec("wait10", true)
	sb := start(t, env, p)
	sbxtest.WaitSigterm(t, sb.PID(), false)
	const n = 10
	statuses := make([]sbx.ExitStatus, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			statuses[i], errs[i] = sb.Wait(timeout(t, 30*time.Second))
		}(i)
	}
	stopped, err := sb.Stop(timeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if errs[i] != nil || !reflect.DeepEqual(statuses[i], stopped) {
			t.Errorf("waiter %d: %+v, %v; Stop gave %+v", i, statuses[i], errs[i], stopped)
		}
	}
	if again, err := sb.Wait(context.Background()); err != nil || !reflect.DeepEqual(again, stopped) {
		t.Errorf("Wait after the end: %+v, %v", again, err)
	}
}

func TestStopTwiceIsSafe(t *testing.T) {
	env := sbxtest.Load(t)
	p := env.ProbeSpec("stop2", true)
	sb := start(t, env, p)
	sbxtest.WaitSigterm(t, sb.PID(), false)
	const n = 5
	results := make([]sbx.ExitStatus, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = sb.Stop(timeout(t, 30*time.Second))
		}(i)
	}
	wg.Wait()
	first := results[0]
	for i := range results {
		if errs[i] != nil || !reflect.DeepEqual(results[i], first) {
			t.Errorf("Stop %d: %+v, %v; first %+v", i, results[i], errs[i], first)
		}
	}
	// Once more after the end, and the stop was one SIGTERM: one ladder, one exited.
	if again, err := sb.Stop(context.Background()); err != nil || !reflect.DeepEqual(again, first) {
		t.Errorf("Stop after the end: %+v, %v", again, err)
	}
	if first.Outcome != sbx.OutcomeExited || first.StopStep != "sigterm" {
		t.Errorf("status %+v", first)
	}
	n1 := 0
	for _, ev := range events(sb) {
		if ev.Type == sbx.EventExited {
			n1++
		}
	}
	if n1 != 1 {
		t.Errorf("%d exited events", n1)
	}
}

func TestVMMIgnoringSigtermIsKilledAtTheBudget(t *testing.T) {
	env := sbxtest.Load(t)
	p := env.ProbeSpec("ignoreterm", true, "--ignore-sigterm")
	const budget = 1500 * time.Millisecond
	sb := start(t, env, p, sbx.WithStopTimeout(budget))
	sbxtest.WaitSigterm(t, sb.PID(), true)
	began := time.Now()
	st, err := sb.Stop(timeout(t, 30*time.Second))
	took := time.Since(began)
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if st.Outcome != sbx.OutcomeKilledAfterTimeout || st.Signal != syscall.SIGKILL ||
		st.ExitStatus != 137 || st.Why != "SIGTERM" || st.StopStep != "sigkill" {
		t.Errorf("status %+v", st)
	}
	if took < budget || took > budget+3*time.Second {
		t.Errorf("stopped after %v with a budget of %v", took, budget)
	}
}

func TestExitCodeArrivesTyped(t *testing.T) {
	env := sbxtest.Load(t)
	// No API socket: ready at once; the probe then exits 7 by itself.
	p := env.ProbeSpec("exitcode", false, "--exit-now", "--exit-code", "7")
	sb := start(t, env, p)
	st, err := sb.Wait(timeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	want := sbx.ExitStatus{ID: p.Spec.ID, Outcome: sbx.OutcomeExited, Code: 7, ExitStatus: 7}
	if !reflect.DeepEqual(st, want) || st.Success() {
		t.Errorf("status %+v, want %+v", st, want)
	}
}

func TestSignalArrivesTyped(t *testing.T) {
	env := sbxtest.Load(t)
	t.Run("SIGTERM at the ladder's step", func(t *testing.T) {
		sbxtest.Load(t)
		p := env.ProbeSpec("sigterm", true, "--sigterm-default")
		sb := start(t, env, p)
		sbxtest.WaitForFile(t, p.Report, 10*time.Second)
		st, err := sb.Stop(timeout(t, 30*time.Second))
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if st.Outcome != sbx.OutcomeSignaled || st.Signal != syscall.SIGTERM || st.ExitStatus != 143 ||
			st.Why != "SIGTERM" {
			t.Errorf("status %+v", st)
		}
	})
	t.Run("SIGKILL from outside", func(t *testing.T) {
		sbxtest.Load(t)
		p := env.ProbeSpec("sigkill", true)
		sb := start(t, env, p)
		if err := syscall.Kill(sb.PID(), syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", sb.PID(), err)
		}
		st, err := sb.Wait(timeout(t, 30*time.Second))
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		want := sbx.ExitStatus{ID: p.Spec.ID, Outcome: sbx.OutcomeSignaled, Signal: syscall.SIGKILL,
			ExitStatus: 137}
		if !reflect.DeepEqual(st, want) {
			t.Errorf("status %+v, want %+v", st, want)
		}
	})
}

func TestCheckPrintsThePlan(t *testing.T) {
	env := sbxtest.Load(t)
	p := env.ProbeSpec("check", true)
	plan, err := sbx.Check(timeout(t, 10*time.Second), p.Spec, env.Options()...)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	wantArgv := append([]string{env.Probe}, p.Spec.VMM.Args...)
	if plan.ID != p.Spec.ID || plan.Kind != sbx.KindGeneric || !reflect.DeepEqual(plan.Argv, wantArgv) ||
		plan.Netns != env.Netns || !plan.PIDNamespace || plan.Jail || plan.Files != nil ||
		plan.Cgroup != nil || plan.Links["vmlinux"] != p.Spec.Kernel {
		t.Errorf("plan %+v", plan)
	}
	if _, err := os.Lstat(p.Spec.SandboxDir); !os.IsNotExist(err) {
		t.Errorf("Check made %s", p.Spec.SandboxDir)
	}
}

func TestRefusedCommandLineIsALaunchError(t *testing.T) {
	env := sbxtest.Load(t)
	p := env.ProbeSpec("cmdline", true)
	_, err := sbx.Start(timeout(t, 10*time.Second), p.Spec, sbx.WithSupervisor(env.Supervisor),
		sbx.WithHelper("sbx-nsexec"))
	var le *sbx.LaunchError
	if !errors.As(err, &le) || le.Step != sbx.StepSupervisor || le.ExitCode != 2 ||
		!strings.Contains(le.Detail, "--helper needs an absolute path") {
		t.Errorf("got %v", err)
	}
}

func TestMissingSupervisorIsALaunchError(t *testing.T) {
	p := sbx.Spec{ID: "x", VMM: sbx.VMM{Kind: sbx.KindGeneric, Binary: "/bin/true"}, SandboxDir: "/run/sbx/x"}
	_, err := sbx.Start(context.Background(), p, sbx.WithSupervisor("/nonexistent/sbx-supervisor"))
	var le *sbx.LaunchError
	if !errors.As(err, &le) || le.Step != sbx.StepSupervisor || le.ExitCode != -1 {
		t.Errorf("got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sbx.Start(ctx, p); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a done context: %v", err)
	}
}

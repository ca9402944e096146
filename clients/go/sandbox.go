// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Sandbox is one sandbox: a `sbx-supervisor run` process and the VMM it supervises. It comes
// from Start, with the supervisor a child of the caller (or, WithDetach, not), or from Attach,
// for a sandbox another process started in a state directory. Its methods are safe for
// concurrent use.
type Sandbox struct {
	id string
	// Set from the `started` event, before started is closed; read only after that.
	pid, pgid, landlockABI int

	events  chan Event
	started chan struct{}
	ready   chan struct{}
	done    chan struct{}
	// Set before done is closed.
	status    ExitStatus
	lostErr   error
	exit      supervisorExit
	sawEvent  bool
	sawExited bool

	// requestStop asks the supervisor to run its stop ladder: SIGTERM to a `run` child, or
	// `sbx-supervisor stop` for a sandbox in a state directory.
	requestStop func() error
	stopOnce    sync.Once
	stopErr     error
	// For a sandbox in a state directory: closed when `sbx-supervisor stop` has ended, with
	// stopCmdErr set if it did not print the `exited` event; and the sandbox's state now.
	stopCmdDone chan struct{}
	stopCmdErr  error
	stateNow    func() (Status, error)
	// abandon stops following a detached or attached sandbox (it runs on): Exited is then
	// closed with the sandbox lost to this process. Nil for a `run` child.
	abandon func()

	supervisorPID int
	logs          *logTail
}

// supervisorExit is how the process the events came from ended.
type supervisorExit struct {
	text   string // "exit status 125", "signal: killed"
	code   int    // the exit code, or -1 when it did not exit normally
	status int    // the exit code, or 128+signal
}

// eventBuffer holds every event of a sandbox's life (started, ready, up to three stopping,
// exited) many times over: Events never makes the supervisor wait for a slow reader.
const eventBuffer = 64

func newSandbox(id string) *Sandbox {
	return &Sandbox{
		id:      id,
		events:  make(chan Event, eventBuffer),
		started: make(chan struct{}),
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Start launches spec through `sbx-supervisor run --spec - --events-fd 3` and returns once
// the sandbox is ready (its API socket accepts a connection; at once without one).
//
// ctx bounds the start only. Cancelled before the sandbox is ready, the supervisor is sent
// SIGTERM (it runs its stop ladder), Start waits until it has been reaped and returns
// ctx.Err(). Once Start has returned, ctx has no effect on the sandbox: it runs until Stop, or
// until the VMM ends on its own.
//
// A launch that fails returns a *LaunchError and leaves no process: the supervisor was reaped,
// and it reaped whatever it started. A spec the supervisor refuses gives StepSpec with the
// field named; a request the helper's policy refuses gives the helper's step
// (validate_request, ...) with its errno. With WithStateDir, a failed or cancelled launch
// leaves no state either: Start removes the sandbox's directory (`sbx-supervisor rm`), unless
// it was not this launch's (a duplicate id is refused with StepSupervisor and changes
// nothing).
//
// The supervisor runs in a session of its own (a terminal's Ctrl-C does not reach it) with the
// caller's environment less NOTIFY_SOCKET. It does not die with the caller: a sandbox whose
// caller exits keeps running until it is stopped or the VMM ends. With WithStateDir and
// WithDetach another process can then take it over with Attach; see WithDetach for how such a
// Start differs.
func Start(ctx context.Context, spec Spec, opts ...Option) (*Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	args, err := o.runArgs()
	if err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("sbx: encode spec: %w", err)
	}
	s, err := spawnRun(o, args, spec.ID, specJSON)
	if err != nil {
		return nil, err
	}
	if o.detach {
		return startDetached(ctx, o, s)
	}
	select {
	case <-s.ready:
		return s, nil
	case <-s.done:
		if closed(s.ready) { // ready, then ended at once: still a sandbox that started
			return s, nil
		}
		err := s.launchError()
		o.removeFailed(s)
		return nil, err
	case <-ctx.Done():
		if closed(s.ready) {
			return s, nil
		}
		// Best effort: if the signal cannot be sent the supervisor is already gone.
		_ = s.requestStop()
		<-s.done
		o.removeFailed(s)
		return nil, ctx.Err()
	}
}

// spawnRun starts `sbx-supervisor run` with the spec on its stdin and its events on fd 3, and
// a Sandbox watching them.
func spawnRun(o options, args []string, id string, specJSON []byte) (*Sandbox, error) {
	p, err := newRunPipes()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.supervisor, args...)
	cmd.Stdin = p.specR
	cmd.Stdout = p.logW
	cmd.Stderr = p.logW
	cmd.ExtraFiles = []*os.File{p.eventsW} // fd 3
	cmd.Env = supervisorEnv(os.Environ())
	// A session of its own: no signal for the caller's terminal or process group reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	p.closeChildEnds()
	if err != nil {
		p.closeOurEnds()
		return nil, &LaunchError{ID: id, Step: StepSupervisor, Detail: err.Error(),
			ExitCode: -1, Err: err}
	}
	go func() {
		// Fails only if the supervisor died first; its exit then says why.
		_, _ = p.specW.Write(specJSON)
		p.specW.Close()
	}()

	s := newSandbox(id)
	s.supervisorPID = cmd.Process.Pid
	s.requestStop = func() error {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil &&
			!errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("sbx: SIGTERM to sbx-supervisor (pid %d): %w", cmd.Process.Pid, err)
		}
		return nil
	}
	s.logs = newLogTail(o.logOutput)
	go s.logs.copyFrom(p.logR)
	go s.watch(p.eventsR, func() supervisorExit { return reap(cmd) })
	return s, nil
}

// startDetached finishes a Start with WithDetach: `run --detach` (launcher) returns at
// `started`, or fails as a run does; the sandbox is then followed from its state directory
// until `ready`.
func startDetached(ctx context.Context, o options, launcher *Sandbox) (*Sandbox, error) {
	// Not cut short by ctx: the command returns at `started` or at the launch's failure, and
	// SIGTERM would end the relay, not the detached supervisor. A cancelled ctx is acted on
	// once there is a sandbox to stop.
	<-launcher.done
	if !closed(launcher.started) {
		err := launcher.launchError()
		o.removeFailed(launcher)
		return nil, err
	}
	s, err := attach(context.Background(), o, o.stateDir, launcher.id, launcher.logs)
	if err != nil {
		var lost *LostError
		if errors.As(err, &lost) {
			o.remove(launcher.id, launcher.logs)
			return nil, &LaunchError{ID: launcher.id, Step: StepReady, Detail: err.Error(),
				ExitCode: 125, Err: err}
		}
		return nil, err
	}
	select {
	case <-s.ready:
		return s, nil
	case <-s.done:
		if closed(s.ready) {
			return s, nil
		}
		err := s.launchError()
		o.removeFailed(s)
		return nil, err
	case <-ctx.Done():
		if closed(s.ready) {
			return s, nil
		}
		if _, err := s.Stop(context.Background()); err != nil && !errors.Is(err, ErrLost) {
			s.abandon()
			return nil, fmt.Errorf("%w; and stopping the sandbox %q failed: %v", ctx.Err(), s.id, err)
		}
		o.removeFailed(s)
		return nil, ctx.Err()
	}
}

// runPipes are the supervisor's stdin (the spec), fd 3 (the events) and stdout+stderr (logs).
type runPipes struct {
	specR, specW, eventsR, eventsW, logR, logW *os.File
}

func newRunPipes() (*runPipes, error) {
	var p runPipes
	var err error
	if p.specR, p.specW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("sbx: pipe: %w", err)
	}
	if p.eventsR, p.eventsW, err = os.Pipe(); err != nil {
		p.specR.Close()
		p.specW.Close()
		return nil, fmt.Errorf("sbx: pipe: %w", err)
	}
	if p.logR, p.logW, err = os.Pipe(); err != nil {
		p.closeChildEnds()
		p.specW.Close()
		p.eventsR.Close()
		return nil, fmt.Errorf("sbx: pipe: %w", err)
	}
	return &p, nil
}

// closeChildEnds closes this process's copies of the child's ends, so EOF on events and logs
// means the supervisor (and all it passed them to) closed them.
func (p *runPipes) closeChildEnds() {
	for _, f := range []*os.File{p.specR, p.eventsW, p.logW} {
		if f != nil {
			f.Close()
		}
	}
}

func (p *runPipes) closeOurEnds() {
	for _, f := range []*os.File{p.specW, p.eventsR, p.logR} {
		if f != nil {
			f.Close()
		}
	}
}

// supervisorEnv is the caller's environment without NOTIFY_SOCKET: a manager run by systemd
// must not have its supervisors notify its own unit.
func supervisorEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			out = append(out, kv)
		}
	}
	return out
}

// reap waits for the supervisor. os.Process marks it done before reaping it, so a concurrent
// Stop never signals a reused pid.
func reap(cmd *exec.Cmd) supervisorExit {
	err := cmd.Wait()
	ps := cmd.ProcessState
	if ps == nil {
		return supervisorExit{text: err.Error(), code: -1, status: -1}
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		return supervisorExit{text: ps.String(), code: -1, status: 128 + int(ws.Signal())}
	default:
		return supervisorExit{text: ps.String(), code: ps.ExitCode(), status: ps.ExitCode()}
	}
}

// watch reads the sandbox's events from stream to EOF, then calls end, which returns once
// whatever wrote the stream is gone, and publishes the exit status. It is the whole life of a
// Sandbox, whatever the stream: a `run` child's events fd, or the events of a sandbox in a
// state directory as its follower (`sbx-supervisor events ID --follow`) relays them.
func (s *Sandbox) watch(stream io.ReadCloser, end func() supervisorExit) {
	var tracker statusTracker
	tracker.id = s.id
	startedClosed, readyClosed := false, false
	err := readEvents(stream, func(ev Event) {
		s.sawEvent = true
		tracker.observe(ev)
		switch ev.Type {
		case EventStarted:
			if !startedClosed {
				startedClosed = true
				s.pid, s.pgid, s.landlockABI = ev.PID, ev.PGID, ev.LandlockABI
				close(s.started)
			}
		case EventReady:
			if !readyClosed {
				readyClosed = true
				close(s.ready)
			}
		}
		s.publish(ev)
	}, func(err error) {
		s.logs.note(err.Error())
	})
	if err != nil {
		// Never leave the writer blocked on a full pipe: read the rest unparsed.
		_, _ = io.Copy(io.Discard, stream)
	}
	stream.Close()
	s.exit = end()
	s.sawExited = tracker.exited != nil
	s.status = tracker.status(s.exit.text, s.exit.status)
	if !s.sawExited {
		s.lostErr = &LostError{ID: s.id, SupervisorPID: s.supervisorPID, Detail: s.exit.text}
	}
	close(s.events)
	close(s.done)
}

// publish hands ev to Events without ever blocking the event stream.
func (s *Sandbox) publish(ev Event) {
	select {
	case s.events <- ev:
	default:
	}
}

// closed reports whether ch is closed, without blocking.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// launchError says why a sandbox that ended before it was ready did not start.
func (s *Sandbox) launchError() *LaunchError {
	st := s.status
	e := &LaunchError{ID: s.id, Status: &st}
	switch {
	case st.Outcome == OutcomeSetupFailed:
		e.Step, e.Errno, e.Detail, e.ExitCode = st.Step, st.Errno, st.Detail, st.ExitStatus
	case s.sawExited:
		e.Step = StepReady
		e.Detail = "the VMM ended before it was ready: " + st.String()
		e.ExitCode = st.ExitStatus
	case s.sawEvent:
		// Events, then the end of the supervisor without `exited`: lost before it was ready.
		e.Step = StepReady
		e.Detail = "the sandbox was lost before it was ready: " + s.lostErr.Error()
		e.ExitCode = st.ExitStatus
		e.Err = s.lostErr
	default:
		// No event at all: the supervisor refused its input or could not set itself up.
		e.Status = nil
		e.ExitCode = s.exit.code
		lines := s.logs.snapshot(time.Second)
		if specErr := parseSpecError(lines); specErr != nil {
			e.Step, e.Field, e.Detail, e.Err = StepSpec, specErr.Field, specErr.Reason, specErr
			break
		}
		e.Step = StepSupervisor
		e.Detail = supervisorMessage(lines)
		if e.Detail == "" {
			e.Detail = "sbx-supervisor ended without an event: " + s.exit.text
		}
	}
	return e
}

// ID returns the sandbox's id.
func (s *Sandbox) ID() string { return s.id }

// PID returns the VMM's pid, as the `started` event gave it. With a PID namespace (the
// default) the VMM's process group is led by its init, the VMM's parent.
func (s *Sandbox) PID() int { return s.pid }

// PGID returns the VMM's process group: with a PID namespace the init's pid, else PID().
func (s *Sandbox) PGID() int { return s.pgid }

// LandlockABI returns the Landlock ABI of the VMM's layer, 0 for none.
func (s *Sandbox) LandlockABI() int { return s.landlockABI }

// SupervisorPID returns the pid of the sandbox's sbx-supervisor process: the `run` child, or
// for a detached or attached sandbox the supervisor `sbx-supervisor ps` names.
func (s *Sandbox) SupervisorPID() int { return s.supervisorPID }

// Events returns the sandbox's events, from `started` on, in order; the channel is closed
// after the last one, when Exited is. For an attached sandbox they are replayed from the
// first, then the live ones follow. It is buffered for a sandbox's whole life: reading it is
// optional, and an event that found it full is dropped, never waited for.
func (s *Sandbox) Events() <-chan Event { return s.events }

// Ready returns a channel closed at the `ready` event. Start returns only once it is closed;
// an attached sandbox may not be ready yet. It is never closed for a sandbox that ended before
// it was ready.
func (s *Sandbox) Ready() <-chan struct{} { return s.ready }

// Exited returns a channel closed once the sandbox has ended: the VMM and everything the
// sandbox started are gone, and so is the supervisor: a `run` child has been reaped; the
// supervisor of a detached or attached sandbox has written its `exited` event and let go of
// its state directory's lock (it is exiting), or it is lost.
func (s *Sandbox) Exited() <-chan struct{} { return s.done }

// Wait blocks until the sandbox has ended and returns its exit status; with ctx done first it
// returns ctx.Err() and the sandbox runs on. Any number of goroutines may wait; all get the
// same status. An attached sandbox that had already exited answers at once, from
// `sbx-supervisor wait`.
//
// When the supervisor ended without an `exited` event (it was killed, or `ps` says it is
// lost), Wait returns a *LostError (errors.Is(err, ErrLost)) together with a status of
// OutcomeLost.
func (s *Sandbox) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-s.done:
		return s.status, s.lostErr
	default:
	}
	select {
	case <-s.done:
		return s.status, s.lostErr
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Stop asks the supervisor to stop the sandbox and waits for it to end, as Wait does. The
// supervisor runs its stop ladder with the spec's budget (or WithStopTimeout's): the VMM's
// graceful request, SIGTERM, then SIGKILL once the budget is spent; it never waits unbounded.
// The request is SIGTERM to a `run` child, and `sbx-supervisor stop ID --state-dir DIR
// [--timeout-ms N]` for a detached or attached sandbox (its `stopping` events then say why
// `stop_request`).
//
// Stop is idempotent: the request is sent once, by the first call; later calls, concurrent or
// not, only wait. ctx bounds the wait, not the stop: the ladder goes on if ctx is done first.
// Stopping a sandbox that already ended returns its status. If the request could not be made
// (the stop command failed while the sandbox lives on), every call returns that error.
func (s *Sandbox) Stop(ctx context.Context) (ExitStatus, error) {
	s.stopOnce.Do(func() { s.stopErr = s.requestStop() })
	if s.stopErr != nil {
		return ExitStatus{}, s.stopErr
	}
	if s.stopCmdDone == nil {
		return s.Wait(ctx)
	}
	select {
	case <-s.done:
		return s.status, s.lostErr
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	case <-s.stopCmdDone:
	}
	if s.stopCmdErr == nil {
		return s.Wait(ctx)
	}
	// The command failed. If the sandbox is gone anyway (lost, or it exited meanwhile) its
	// follower finds so too, and Wait tells how; a sandbox that lives on was not stopped.
	if st, err := s.stateNow(); err == nil && !st.Live() {
		return s.Wait(ctx)
	}
	select {
	case <-s.done:
		return s.status, s.lostErr
	default:
		return ExitStatus{}, s.stopCmdErr
	}
}

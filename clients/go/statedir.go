// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// State is a sandbox's state as `sbx-supervisor ps` reports it.
type State string

// The states of a sandbox in a state directory, in the order they come; a sandbox ends
// exited or lost.
const (
	// StateStarting: the supervisor is launching the VMM.
	StateStarting State = "starting"
	// StateRunning: the VMM runs (`started`), not yet ready.
	StateRunning State = "running"
	// StateReady: the VMM is ready (`ready`).
	StateReady State = "ready"
	// StateStopping: the stop ladder runs.
	StateStopping State = "stopping"
	// StateExited: the sandbox ended; its exit status is kept (exit.json).
	StateExited State = "exited"
	// StateLost: the supervisor is gone without an exit status (it was killed); its VMM went
	// with it.
	StateLost State = "lost"
)

// Status is one sandbox of a state directory, as `sbx-supervisor ps --json` lists it.
type Status struct {
	// ID is the sandbox's id: its directory's name.
	ID string
	// SupervisorPID and VMMPID are the supervisor's and the VMM's pids (0 when not yet known).
	SupervisorPID int
	VMMPID        int
	// Age is the time since the sandbox was started.
	Age time.Duration
	// State is where the sandbox is in its life.
	State State
	// Outcome and ExitStatus say how an exited sandbox ended (StateExited only): the outcome
	// of its `exited` event and the supervisor's exit status (the VMM's code, 128+signal, or
	// 125/126/127).
	Outcome    Outcome
	ExitStatus int
	// Raw is ps's JSON line, for members this package does not know.
	Raw json.RawMessage
}

// Live reports whether the sandbox's supervisor still runs: any state but exited and lost.
func (s Status) Live() bool { return s.State != StateExited && s.State != StateLost }

// List returns the sandboxes of stateDir, sorted by id, from `sbx-supervisor ps --state-dir
// stateDir --json`. Only WithSupervisor matters among the options. ctx bounds the command.
func List(ctx context.Context, stateDir string, opts ...Option) ([]Status, error) {
	o := buildOptions(opts)
	return o.list(ctx, stateDir)
}

// Attach adopts the sandbox id of stateDir, started by another process (or an earlier run of
// this one) with WithStateDir, typically WithDetach: the returned Sandbox is the same as the
// one Start gave. Its Events are replayed from the first (`started`) and the live ones follow
// (`sbx-supervisor events ID --state-dir DIR --follow`); Stop runs `sbx-supervisor stop`, with
// WithStopTimeout's budget if given; Wait and Exited end with the `exited` event. A sandbox
// that had already exited is attached too: Wait answers at once, from `sbx-supervisor wait`.
//
// Attach returns once the `started` event has been read (PID and the rest are set); the
// sandbox may not be ready yet: see Ready. A sandbox `ps` reports lost gives a *LostError
// (errors.Is(err, ErrLost)); an id the directory does not hold, ErrNotFound. WithSupervisor,
// WithStopTimeout and WithLogOutput (the commands' own messages) apply. ctx bounds the attach
// only: once Attach has returned it has no effect.
//
// Any number of processes may attach the same sandbox at once; each follows it on a
// connection of its own to the supervisor's control socket (16 at most at once). The state
// stays after the sandbox ended, until Remove.
func Attach(ctx context.Context, stateDir, id string, opts ...Option) (*Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	if _, err := o.stopTimeoutMs(); err != nil {
		return nil, err
	}
	return attach(ctx, o, stateDir, id, newLogTail(o.logOutput))
}

// Remove removes the state of the exited or lost sandbox id from stateDir (`sbx-supervisor rm`),
// so that the id can be used again. A live sandbox is refused: stop it first. Only
// WithSupervisor matters among the options. ctx bounds the command.
func Remove(ctx context.Context, stateDir, id string, opts ...Option) error {
	o := buildOptions(opts)
	r, err := o.command(ctx, "rm", id, "--state-dir", stateDir)
	if err != nil {
		return err
	}
	if r.code != 0 {
		return r.failure("rm " + id)
	}
	return nil
}

// attach is Attach with its options built; logs gets the commands' messages.
func attach(ctx context.Context, o options, dir, id string, logs *logTail) (*Sandbox, error) {
	st, err := o.find(ctx, dir, id)
	if err != nil {
		return nil, err
	}
	if st.State == StateLost {
		return nil, &LostError{ID: id, SupervisorPID: st.SupervisorPID,
			Detail: "sbx-supervisor ps reports it lost"}
	}
	f := &follower{o: o, dir: dir, id: id, logs: logs, quit: make(chan struct{}),
		done: make(chan struct{})}
	if st.State == StateExited {
		if f.exitedLine, err = o.waitLine(ctx, dir, id); err != nil {
			return nil, err
		}
	}
	s := newSandbox(id)
	s.supervisorPID = st.SupervisorPID
	s.logs = logs
	s.stopCmdDone = make(chan struct{})
	s.requestStop = func() error { return f.requestStop(s) }
	s.stateNow = func() (Status, error) { return o.find(context.Background(), dir, id) }
	s.abandon = f.abandon
	r, w := io.Pipe()
	go f.run(w)
	go s.watch(r, f.end)
	select {
	case <-s.started:
		return s, nil
	case <-s.done:
		if closed(s.started) {
			return s, nil
		}
		if s.lostErr != nil {
			return nil, s.lostErr
		}
		return s, nil // a launch that failed (setup_failed): Wait says how
	case <-ctx.Done():
		f.abandon()
		<-s.done
		return nil, ctx.Err()
	}
}

// follower relays the events of a sandbox in a state directory to its Sandbox, from the first:
// `sbx-supervisor events ID --follow`, followed again (skipping what was relayed) if it breaks
// off while the sandbox lives, and ended by the `exited` event, by `wait`'s answer when the
// sandbox exited meanwhile, or by `ps` saying it is lost.
type follower struct {
	o       options
	dir, id string
	logs    *logTail
	// The `exited` event from `sbx-supervisor wait` for a sandbox that had exited before
	// Attach: relayed last, in place of the one events.jsonl has.
	exitedLine []byte

	quit     chan struct{}
	quitOnce sync.Once
	done     chan struct{} // closed when run has returned
	ended    string        // set before done: why no `exited` event came

	mu  sync.Mutex
	cmd *exec.Cmd // the events command running
}

func (f *follower) run(w *io.PipeWriter) {
	defer close(f.done)
	defer w.Close()
	send := func(line []byte) {
		// Fails only once the reader is gone: nothing is left to tell then.
		_, _ = w.Write(append(append([]byte(nil), line...), '\n'))
	}
	delivered, exited := 0, false
	delay := 50 * time.Millisecond
	for {
		args := []string{"events", f.id, "--state-dir", f.dir}
		if f.exitedLine == nil {
			args = append(args, "--follow")
		}
		n := 0
		err := f.stream(args, func(line []byte) {
			n++
			if n <= delivered || exited {
				return
			}
			delivered++
			isExited := isExitedLine(line)
			if isExited && f.exitedLine != nil {
				return // wait's comes last
			}
			send(line)
			exited = isExited
		})
		if f.exitedLine != nil {
			send(f.exitedLine)
			return
		}
		if exited {
			f.awaitUnlock()
			return
		}
		if closed(f.quit) {
			f.ended = "no longer followed"
			return
		}
		if err != nil {
			f.ended = err.Error()
			return
		}
		st, err := f.o.find(context.Background(), f.dir, f.id)
		switch {
		case err != nil:
			f.ended = err.Error()
			return
		case st.State == StateLost:
			f.ended = "sbx-supervisor ps reports it lost"
			return
		case st.State == StateExited:
			// It exited between the stream's end and ps: exit.json has the status.
			line, err := f.o.waitLine(context.Background(), f.dir, f.id)
			if err != nil {
				f.ended = err.Error()
				return
			}
			send(line)
			return
		}
		// Live, and the stream broke off (the connection was refused or dropped): again.
		f.logs.note(fmt.Sprintf("sbx-supervisor events %s --follow ended while the sandbox is %s; "+
			"following it again", f.id, st.State))
		select {
		case <-f.quit:
			f.ended = "no longer followed"
			return
		case <-time.After(delay):
		}
		if delay < time.Second {
			delay *= 2
		}
	}
}

// stream runs `sbx-supervisor args...` and calls fn with each line of its output.
func (f *follower) stream(args []string, fn func([]byte)) error {
	f.mu.Lock()
	if closed(f.quit) {
		f.mu.Unlock()
		return nil
	}
	cmd := exec.Command(f.o.supervisor, args...)
	cmd.Env = supervisorEnv(os.Environ())
	cmd.Stderr = &lineWriter{logs: f.logs}
	// A reader only: it goes with this process (should it die with the thread that started
	// it instead, the sandbox is followed again).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		f.mu.Unlock()
		return fmt.Errorf("sbx: sbx-supervisor %s: %w", args[0], err)
	}
	f.cmd = cmd
	f.mu.Unlock()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 4096), maxEventLine)
	for sc.Scan() {
		if line := sc.Bytes(); len(line) > 0 {
			fn(line)
		}
	}
	if sc.Err() != nil {
		_, _ = io.Copy(io.Discard, out)
	}
	_ = cmd.Wait()
	f.mu.Lock()
	f.cmd = nil
	f.mu.Unlock()
	return nil
}

// abandon stops following: the events command is killed, the sandbox runs on.
func (f *follower) abandon() {
	f.quitOnce.Do(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		close(f.quit)
		if f.cmd != nil && f.cmd.Process != nil {
			_ = f.cmd.Process.Kill()
		}
	})
}

// end waits for run and says why no `exited` event came, if none did.
func (f *follower) end() supervisorExit {
	<-f.done
	return supervisorExit{text: f.ended, code: 125, status: 125}
}

// awaitUnlock waits, for 5 s at most, until the supervisor has let go of the sandbox's lock:
// after its `exited` event it is then exiting, holding nothing of the sandbox.
func (f *follower) awaitUnlock() {
	fd, err := syscall.Open(filepath.Join(f.dir, f.id, "lock"),
		syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			_ = syscall.Flock(fd, syscall.LOCK_UN)
			return
		}
		if (err != syscall.EWOULDBLOCK && err != syscall.EINTR) || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requestStop starts `sbx-supervisor stop`, which asks the supervisor for its ladder and
// returns at `exited`; s.stopCmdDone is closed when it has ended.
func (f *follower) requestStop(s *Sandbox) error {
	select {
	case <-s.done:
		close(s.stopCmdDone)
		return nil
	default:
	}
	args := []string{"stop", f.id, "--state-dir", f.dir}
	ms, err := f.o.stopTimeoutMs()
	if err != nil {
		return err
	}
	if ms != "" {
		args = append(args, "--timeout-ms", ms)
	}
	cmd := exec.Command(f.o.supervisor, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = supervisorEnv(os.Environ())
	// Not tied to this process: once asked for, the ladder runs whatever becomes of it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("sbx: sbx-supervisor stop %s: %w", f.id, err)
	}
	go func() {
		err := cmd.Wait()
		// It exits with the VMM's status: only a missing `exited` line is a failure.
		if exitedLineIn(stdout.Bytes()) == nil {
			r := cmdResult{stderr: stderr.String(), code: -1}
			if cmd.ProcessState != nil {
				r.code = cmd.ProcessState.ExitCode()
			}
			s.stopCmdErr = r.failure("stop " + f.id)
			if r.code == -1 && err != nil {
				s.stopCmdErr = fmt.Errorf("sbx: sbx-supervisor stop %s: %w", f.id, err)
			}
		}
		close(s.stopCmdDone)
	}()
	return nil
}

// lineWriter hands a command's standard error to a logTail a line at a time.
type lineWriter struct {
	logs    *logTail
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.logs.line(w.partial[:i+1])
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) >= logTailLineMax {
		w.logs.line(append(w.partial, '\n'))
		w.partial = nil
	}
	return len(p), nil
}

func isExitedLine(line []byte) bool {
	ev, err := ParseEvent(line)
	return err == nil && ev.Type == EventExited
}

// exitedLineIn is the `exited` event line among out's lines, or nil.
func exitedLineIn(out []byte) []byte {
	for _, line := range bytes.Split(out, []byte("\n")) {
		if isExitedLine(line) {
			return line
		}
	}
	return nil
}

// cmdResult is how a short supervisor command ended.
type cmdResult struct {
	stdout []byte
	stderr string
	code   int
}

// failure is the error of a command that did not do what was asked, with what it said.
func (r cmdResult) failure(what string) error {
	msg := supervisorMessage(strings.Split(strings.TrimSpace(r.stderr), "\n"))
	if msg == "" {
		msg = "no message"
	}
	return fmt.Errorf("sbx: sbx-supervisor %s: exit status %d: %s", what, r.code, msg)
}

// command runs `sbx-supervisor args...` to its end; an error only if it could not run or ctx
// was done first.
func (o options) command(ctx context.Context, args ...string) (cmdResult, error) {
	cmd := exec.CommandContext(ctx, o.supervisor, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = supervisorEnv(os.Environ())
	err := cmd.Run()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return cmdResult{}, ctxErr
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return cmdResult{}, fmt.Errorf("sbx: sbx-supervisor %s: %w", args[0], err)
	}
	return cmdResult{stdout: stdout.Bytes(), stderr: stderr.String(),
		code: cmd.ProcessState.ExitCode()}, nil
}

func (o options) list(ctx context.Context, dir string) ([]Status, error) {
	r, err := o.command(ctx, "ps", "--state-dir", dir, "--json")
	if err != nil {
		return nil, err
	}
	if r.code != 0 {
		return nil, r.failure("ps --state-dir " + dir)
	}
	var out []Status
	for _, line := range bytes.Split(r.stdout, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var j struct {
			ID            string  `json:"id"`
			SupervisorPID int     `json:"supervisor_pid"`
			VMMPID        int     `json:"vmm_pid"`
			AgeMs         int64   `json:"age_ms"`
			State         State   `json:"state"`
			Outcome       Outcome `json:"outcome"`
			ExitStatus    int     `json:"exit_status"`
		}
		if err := json.Unmarshal(line, &j); err != nil {
			return nil, fmt.Errorf("sbx: sbx-supervisor ps printed %q: %w", line, err)
		}
		out = append(out, Status{ID: j.ID, SupervisorPID: j.SupervisorPID, VMMPID: j.VMMPID,
			Age: time.Duration(j.AgeMs) * time.Millisecond, State: j.State, Outcome: j.Outcome,
			ExitStatus: j.ExitStatus, Raw: append(json.RawMessage(nil), line...)})
	}
	return out, nil
}

// find is the Status of id in dir, or ErrNotFound.
func (o options) find(ctx context.Context, dir, id string) (Status, error) {
	all, err := o.list(ctx, dir)
	if err != nil {
		return Status{}, err
	}
	for _, st := range all {
		if st.ID == id {
			return st, nil
		}
	}
	return Status{}, fmt.Errorf("%w: %q in %s", ErrNotFound, id, dir)
}

// waitLine is the `exited` event `sbx-supervisor wait` prints for id.
func (o options) waitLine(ctx context.Context, dir, id string) ([]byte, error) {
	r, err := o.command(ctx, "wait", id, "--state-dir", dir)
	if err != nil {
		return nil, err
	}
	if line := exitedLineIn(r.stdout); line != nil {
		return line, nil
	}
	if strings.Contains(r.stderr, " is lost") {
		return nil, &LostError{ID: id, Detail: "sbx-supervisor wait: " +
			supervisorMessage(strings.Split(strings.TrimSpace(r.stderr), "\n"))}
	}
	return nil, r.failure("wait " + id)
}

// removeFailed removes the state a failed or cancelled launch made in the state directory:
// only when there is one and the launch made it (it had events: it held the id's lock).
func (o options) removeFailed(s *Sandbox) {
	if o.stateDir != "" && s.sawEvent {
		o.remove(s.id, s.logs)
	}
}

func (o options) remove(id string, logs *logTail) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Remove(ctx, o.stateDir, id, WithSupervisor(o.supervisor)); err != nil {
		logs.note("removing the state of the failed launch: " + err.Error())
	}
}

// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"fmt"
	"io"
	"strconv"
	"time"
)

// DefaultSupervisor is the supervisor Start and Check run without WithSupervisor: looked up
// in PATH.
const DefaultSupervisor = "sbx-supervisor"

// Option changes how Start, Check, Attach, List and Remove run the supervisor.
type Option func(*options)

type options struct {
	supervisor  string
	helper      string
	stopTimeout *time.Duration
	logOutput   io.Writer
	stateDir    string
	detach      bool
}

// WithSupervisor runs the sbx-supervisor at path instead of DefaultSupervisor.
func WithSupervisor(path string) Option {
	return func(o *options) { o.supervisor = path }
}

// WithHelper passes --helper: the sbx-nsexec to launch through, an absolute path, instead of
// the supervisor's default (/usr/libexec/sbx/sbx-nsexec).
func WithHelper(path string) Option {
	return func(o *options) { o.helper = path }
}

// WithStopTimeout passes --stop-timeout-ms: the stop ladder's budget for this run, overriding
// the spec's stop_timeout_ms. It is rounded down to milliseconds; 0 to 1 hour.
func WithStopTimeout(d time.Duration) Option {
	return func(o *options) { o.stopTimeout = &d }
}

// WithLogOutput sends the supervisor's log (its standard error) and, with StdioInherit, the
// VMM's standard output and error to w, a whole line per Write (a line longer than 4 KiB in
// pieces). Without it they are
// discarded (a LaunchError still carries what the supervisor said). w is written from a
// goroutine of its own and must not block for long: a supervisor whose log cannot be written
// waits for it. One w may serve many sandboxes if it is safe for concurrent use.
func WithLogOutput(w io.Writer) Option {
	return func(o *options) { o.logOutput = w }
}

// WithStateDir passes --state-dir: the supervisor keeps the sandbox's state in dir/<id>/
// (its lock, state.json, events.jsonl, exit.json, control.sock), where Attach and List find
// it from another process, and where it stays after the sandbox ended, until Remove. dir must
// exist, be the caller's and not be group- or other-writable. A launch that fails, or whose
// ctx is cancelled, leaves no state behind: Start removes what it made.
func WithStateDir(dir string) Option {
	return func(o *options) { o.stateDir = dir }
}

// WithDetach passes --detach, and needs WithStateDir: the supervisor is not a child of the
// caller but goes on in a session of its own, so that the sandbox outlives the caller and can
// be re-adopted with Attach. Start still returns at `ready` (it follows the sandbox with
// `sbx-supervisor events ID --follow`), and the Sandbox is then the same as one from Attach:
// Stop runs `sbx-supervisor stop`. The VMM's stdio is null unless the spec says so
// (StdioInherit is refused: a detached VMM has no terminal), and the supervisor's log goes to
// dir/<id>/supervisor.log, not to WithLogOutput.
func WithDetach() Option {
	return func(o *options) { o.detach = true }
}

func buildOptions(opts []Option) options {
	o := options{supervisor: DefaultSupervisor, logOutput: io.Discard}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logOutput == nil {
		o.logOutput = io.Discard
	}
	return o
}

// runArgs is the supervisor's command line for `run`, with the events on fd 3.
func (o options) runArgs() ([]string, error) {
	args := []string{"run", "--spec", "-", "--events-fd", "3"}
	if o.detach && o.stateDir == "" {
		return nil, fmt.Errorf("sbx: WithDetach needs WithStateDir")
	}
	if o.stateDir != "" {
		args = append(args, "--state-dir", o.stateDir)
		if o.detach {
			args = append(args, "--detach")
		}
	}
	if o.helper != "" {
		args = append(args, "--helper", o.helper)
	}
	ms, err := o.stopTimeoutMs()
	if err != nil {
		return nil, err
	}
	if ms != "" {
		args = append(args, "--stop-timeout-ms", ms)
	}
	return args, nil
}

// stopTimeoutMs is WithStopTimeout's budget for `sbx-supervisor stop --timeout-ms`, or "".
func (o options) stopTimeoutMs() (string, error) {
	if o.stopTimeout == nil {
		return "", nil
	}
	ms := o.stopTimeout.Milliseconds()
	if ms < 0 || ms > 3600*1000 {
		return "", fmt.Errorf("sbx: stop timeout %v is not within 0..1h", *o.stopTimeout)
	}
	return strconv.FormatInt(ms, 10), nil
}

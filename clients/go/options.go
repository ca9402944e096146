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

// Option changes how Start and Check run the supervisor.
type Option func(*options)

type options struct {
	supervisor  string
	helper      string
	stopTimeout *time.Duration
	logOutput   io.Writer
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
	if o.helper != "" {
		args = append(args, "--helper", o.helper)
	}
	if o.stopTimeout != nil {
		ms := o.stopTimeout.Milliseconds()
		if ms < 0 || ms > 3600*1000 {
			return nil, fmt.Errorf("sbx: stop timeout %v is not within 0..1h", *o.stopTimeout)
		}
		args = append(args, "--stop-timeout-ms", strconv.FormatInt(ms, 10))
	}
	return args, nil
}

// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"syscall"
)

// EventType is an event's "event" member.
type EventType string

// The events of one sandbox, in the order they come: started, ready, stopping (one per ladder
// step reached), exited. A setup failure has exited alone.
const (
	EventStarted  EventType = "started"
	EventReady    EventType = "ready"
	EventStopping EventType = "stopping"
	EventExited   EventType = "exited"
)

// Event is one line of the supervisor's JSON-lines event stream, decoded. Which fields are set
// depends on Type; Raw keeps the line as the supervisor wrote it, for members this package
// does not know.
type Event struct {
	// Type says which event this is, and so which fields below are set.
	Type EventType `json:"event"`
	// ID is the sandbox's id.
	ID string `json:"id"`
	// TMs counts milliseconds from the launch request.
	TMs int64 `json:"t_ms"`

	// started: the VMM's own pid, its process group (with a PID namespace the init's pid)
	// and the Landlock ABI of its layer (0: none).
	PID         int `json:"pid,omitempty"`
	PGID        int `json:"pgid,omitempty"`
	LandlockABI int `json:"landlock_abi,omitempty"`

	// stopping: why the ladder runs ("SIGTERM", "SIGINT", "not_ready") and the step reached
	// ("graceful_request", "sigterm", "sigkill"). exited with OutcomeSetupFailed: Step is the
	// step that failed.
	Why  string `json:"why,omitempty"`
	Step string `json:"step,omitempty"`

	// exited: the outcome and what goes with it, as in ExitStatus: Code (OutcomeExited),
	// Signal (OutcomeSignaled, OutcomeKilledAfterTimeout), Errno and Detail
	// (OutcomeSetupFailed; Detail also for OutcomeLost), the supervisor's ExitStatus, and with
	// a cgroup Usage and, when it could not be removed, CgroupLeft.
	Outcome    Outcome     `json:"outcome,omitempty"`
	Code       int         `json:"code,omitempty"`
	Signal     int         `json:"signal,omitempty"`
	Errno      int         `json:"errno,omitempty"`
	Detail     string      `json:"detail,omitempty"`
	ExitStatus int         `json:"exit_status,omitempty"`
	Usage      *Usage      `json:"usage,omitempty"`
	CgroupLeft *CgroupLeft `json:"cgroup_left,omitempty"`

	// Raw is the event's JSON line, without its newline.
	Raw json.RawMessage `json:"-"`
}

// Outcome is how a sandbox ended: the `exited` event's "outcome".
type Outcome string

// The outcomes. Exactly one per sandbox.
const (
	// OutcomeExited: the VMM exited with Code.
	OutcomeExited Outcome = "exited"
	// OutcomeSignaled: the VMM was killed by Signal (SIGTERM at the ladder's sigterm step
	// included).
	OutcomeSignaled Outcome = "signaled"
	// OutcomeKilledAfterTimeout: the ladder's budget was spent and the VMM SIGKILLed.
	OutcomeKilledAfterTimeout Outcome = "killed_after_timeout"
	// OutcomeSetupFailed: the launch failed at Step with Errno before the VMM ran.
	OutcomeSetupFailed Outcome = "setup_failed"
	// OutcomeLost: the VMM was not reaped 1 s after SIGKILL, or the supervisor ended without
	// an exited event (killed): Detail says which.
	OutcomeLost Outcome = "lost"
)

// Usage is the `exited` event's cgroup usage. A figure the kernel does not provide is nil.
type Usage struct {
	CPUUsec         *uint64 `json:"cpu_usec"`          // cpu.stat usage_usec
	MemoryPeakBytes *uint64 `json:"memory_peak_bytes"` // memory.peak
	OOMKills        *uint64 `json:"oom_kills"`         // memory.events oom_kill
	PidsPeak        *uint64 `json:"pids_peak"`         // pids.peak
}

// CgroupLeft is the `exited` event's "cgroup_left": the sandbox's cgroup could not be removed.
type CgroupLeft struct {
	Path   string `json:"path"`   // the cgroup directory left
	Errno  int    `json:"errno"`  // why rmdir failed
	Detail string `json:"detail"` // what the supervisor tried
}

// ExitStatus is how a sandbox ended, from its `exited` event and the `stopping` events before
// it.
type ExitStatus struct {
	// ID is the sandbox's id.
	ID string
	// Outcome says which of the fields below are set.
	Outcome Outcome
	// Code is the VMM's exit code (OutcomeExited).
	Code int
	// Signal killed the VMM (OutcomeSignaled, OutcomeKilledAfterTimeout).
	Signal syscall.Signal
	// Step, Errno and Detail say where a launch failed (OutcomeSetupFailed); Detail also says
	// why a sandbox was lost (OutcomeLost).
	Step   string
	Errno  syscall.Errno
	Detail string
	// Why is what started the stop ladder ("SIGTERM", "SIGINT", "not_ready"); empty when the
	// VMM ended on its own.
	Why string
	// StopStep is the last ladder step reached ("graceful_request", "sigterm", "sigkill");
	// empty when the ladder did not run.
	StopStep string
	// Usage is the cgroup's usage, when the sandbox had a cgroup.
	Usage *Usage
	// CgroupLeft is set when the sandbox's cgroup could not be removed.
	CgroupLeft *CgroupLeft
	// ExitStatus is sbx-supervisor's own exit status: Code, 128+Signal, or 125/126/127 for a
	// setup failure (126: the VMM is not executable, 127: not found).
	ExitStatus int
}

// Success reports whether the VMM exited with code 0.
func (s ExitStatus) Success() bool { return s.Outcome == OutcomeExited && s.Code == 0 }

// String describes the status in a few words, e.g. "exited 0", "signaled 15 (terminated)".
func (s ExitStatus) String() string {
	switch s.Outcome {
	case OutcomeExited:
		return fmt.Sprintf("exited %d", s.Code)
	case OutcomeSignaled, OutcomeKilledAfterTimeout:
		return fmt.Sprintf("%s %d (%v)", s.Outcome, int(s.Signal), s.Signal)
	case OutcomeSetupFailed:
		return fmt.Sprintf("setup_failed at %s: %s: %v", s.Step, s.Detail, s.Errno)
	}
	return fmt.Sprintf("%s: %s", s.Outcome, s.Detail)
}

// ParseEvent decodes one event line.
func ParseEvent(line []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(line, &ev); err != nil {
		return Event{}, fmt.Errorf("sbx: event %q: %w", line, err)
	}
	if ev.Type == "" {
		return Event{}, fmt.Errorf("sbx: event %q has no \"event\" member", line)
	}
	ev.Raw = append(json.RawMessage(nil), line...)
	return ev, nil
}

// maxEventLine bounds one event line; the supervisor's are a few hundred bytes.
const maxEventLine = 64 << 10

// readEvents calls handle for each event on r, in order, until EOF or a read error. It takes
// any JSON-lines stream of the supervisor's events: the events fd of a `run` child, or the
// output of `sbx-supervisor events ID --follow`. A line that does not decode is passed to
// bad and skipped.
func readEvents(r io.Reader, handle func(Event), bad func(error)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxEventLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		ev, err := ParseEvent(line)
		if err != nil {
			bad(err)
			continue
		}
		handle(ev)
	}
	return sc.Err()
}

// statusTracker folds a sandbox's events into its ExitStatus. It does not care where the
// events came from.
type statusTracker struct {
	id       string
	why      string
	stopStep string
	exited   *Event
}

func (t *statusTracker) observe(ev Event) {
	if t.id == "" {
		t.id = ev.ID
	}
	switch ev.Type {
	case EventStopping:
		if t.why == "" {
			t.why = ev.Why
		}
		t.stopStep = ev.Step
	case EventExited:
		if t.exited == nil {
			e := ev
			t.exited = &e
		}
	}
}

// status is the ExitStatus the events gave, or, when no `exited` event came, OutcomeLost with
// what ended the stream (ended describes it, exitStatus is the supervisor's status).
func (t *statusTracker) status(ended string, exitStatus int) ExitStatus {
	s := ExitStatus{ID: t.id, Why: t.why, StopStep: t.stopStep}
	e := t.exited
	if e == nil {
		s.Outcome = OutcomeLost
		s.Detail = "sbx-supervisor ended without an exited event (" + ended + ")"
		s.ExitStatus = exitStatus
		return s
	}
	s.Outcome = e.Outcome
	s.Code = e.Code
	s.Signal = syscall.Signal(e.Signal)
	s.Detail = e.Detail
	s.Usage = e.Usage
	s.CgroupLeft = e.CgroupLeft
	s.ExitStatus = e.ExitStatus
	if e.Outcome == OutcomeSetupFailed {
		s.Step = e.Step
		s.Errno = syscall.Errno(e.Errno)
	}
	return s
}

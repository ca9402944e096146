// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Steps named by a LaunchError that the supervisor's own steps (docs/protocol.md, and
// spawn_helper, control_socket, create_cgroup, enter_cgroup) do not cover.
const (
	// StepSpec: the supervisor refused the spec (Field names the key).
	StepSpec = "spec"
	// StepSupervisor: the supervisor could not run: it could not be executed, its command
	// line was refused (exit 2), or it failed before launching anything (Detail holds its
	// last log line).
	StepSupervisor = "supervisor"
	// StepReady: the VMM started but ended before it was ready (Status says how).
	StepReady = "ready"
)

// LaunchError is why Start did not give a ready sandbox. Nothing of the launch is left when
// Start returns it: the supervisor was reaped, and it reaps all it started.
type LaunchError struct {
	// ID is the spec's id.
	ID string
	// Step is the step that failed: the helper's or the supervisor's step name from the
	// `exited` event's setup_failed outcome (validate_request, exec_vmm, create_cgroup, ...),
	// or StepSpec, StepSupervisor or StepReady.
	Step string
	// Errno is the step's error number, when it has one.
	Errno syscall.Errno
	// Detail says what was refused, as the supervisor reported it.
	Detail string
	// Field names the refused spec key ("vmm.kind", "env.LD_PRELOAD") when Step is StepSpec.
	Field string
	// ExitCode is sbx-supervisor's exit status: 125 (refused or failed setup), 126 (VMM not
	// executable), 127 (VMM not found), 2 (bad command line), the VMM's status for StepReady,
	// or -1 when the supervisor did not exit normally.
	ExitCode int
	// Status is the sandbox's whole exit status when the supervisor reported one.
	Status *ExitStatus
	// Err is the underlying error: a *SpecError for StepSpec, the exec error when the
	// supervisor could not be started.
	Err error
}

// Error describes the failure in one line.
func (e *LaunchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sbx: launch of %q failed at %s", e.ID, e.Step)
	if e.Field != "" {
		fmt.Fprintf(&b, " (field %s)", e.Field)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	if e.Errno != 0 {
		fmt.Fprintf(&b, ": %v", e.Errno)
	}
	if e.ExitCode >= 0 {
		fmt.Fprintf(&b, " (exit status %d)", e.ExitCode)
	}
	return b.String()
}

// Unwrap returns Err: errors.As finds the *SpecError of a refused spec.
func (e *LaunchError) Unwrap() error { return e.Err }

// Is matches the step's errno: errors.Is(err, syscall.EPERM) holds for a launch refused with
// EPERM.
func (e *LaunchError) Is(target error) bool {
	errno, ok := target.(syscall.Errno)
	return ok && e.Errno != 0 && errno == e.Errno
}

// SpecError is the supervisor's refusal of a spec: "spec: FIELD: REASON".
type SpecError struct {
	// Field is the refused key, as the supervisor names it ("vmm.kind", "files.devices[0]");
	// empty when the refusal is about the spec as a whole.
	Field string
	// Reason says why.
	Reason string
}

// Error returns the supervisor's message.
func (e *SpecError) Error() string {
	if e.Field == "" {
		return "sbx: spec: " + e.Reason
	}
	return "sbx: spec: " + e.Field + ": " + e.Reason
}

// supervisorPrefix starts the lines the supervisor writes before its logging is set up.
const supervisorPrefix = "sbx-supervisor: "

// parseSpecError finds the supervisor's spec refusal among its stderr lines.
func parseSpecError(lines []string) *SpecError {
	for _, l := range lines {
		msg, ok := specRefusal(l)
		if !ok {
			continue
		}
		field, reason, found := strings.Cut(msg, ": ")
		if !found || strings.ContainsAny(field, " \t") {
			return &SpecError{Reason: msg}
		}
		return &SpecError{Field: field, Reason: reason}
	}
	return nil
}

// specRefusal is the message of a spec refusal line: "sbx-supervisor: spec: ..." (the spec
// itself), or "sbx-supervisor[ID] error: spec: ..." (the spec with the command line, e.g.
// stdio inherit with --detach).
func specRefusal(line string) (string, bool) {
	if msg := strings.TrimPrefix(line, supervisorPrefix+"spec: "); msg != line {
		return msg, true
	}
	if !strings.HasPrefix(line, "sbx-supervisor[") {
		return "", false
	}
	const marker = "] error: spec: "
	if i := strings.Index(line, marker); i >= 0 && !strings.Contains(line[:i], " ") {
		return line[i+len(marker):], true
	}
	return "", false
}

// supervisorMessage is what the supervisor said about a failure it reported only in its log:
// its own message ("sbx-supervisor: --helper needs an absolute path", printed before the
// usage), else its last error line, else its last line.
func supervisorMessage(lines []string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, supervisorPrefix) {
			return strings.TrimSpace(l)
		}
	}
	last := ""
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "sbx-supervisor[") && strings.Contains(l, "] error: ") {
			return l
		}
		if last == "" {
			last = l
		}
	}
	return last
}

// ErrLost is what every *LostError matches with errors.Is.
var ErrLost = errors.New("sbx: sandbox lost")

// ErrNotFound is what Attach returns, wrapped, for an id the state directory does not hold.
var ErrNotFound = errors.New("sbx: no such sandbox in the state directory")

// LostError says that a sandbox's supervisor is gone without an exit status: it was killed
// (SIGKILL, the OOM killer) before it could write its `exited` event. Its VMM went with it
// (parent-death signal, PID namespace), but how the VMM ended is not known. Attach returns it
// for a sandbox `ps` reports `lost`; Wait and Stop return it, beside an ExitStatus with
// OutcomeLost, when the supervisor of a sandbox being watched dies so.
type LostError struct {
	// ID is the sandbox's id.
	ID string
	// SupervisorPID is the pid the supervisor had, 0 when unknown.
	SupervisorPID int
	// Detail says how it was found out: the supervisor's exit ("signal: killed"), or what
	// `sbx-supervisor wait` said.
	Detail string
}

// Error describes the loss in one line.
func (e *LostError) Error() string {
	msg := fmt.Sprintf("sbx: sandbox %q lost: its supervisor", e.ID)
	if e.SupervisorPID > 0 {
		msg += fmt.Sprintf(" (pid %d)", e.SupervisorPID)
	}
	msg += " is gone without an exit status"
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// Is matches ErrLost.
func (e *LostError) Is(target error) bool { return target == ErrLost }

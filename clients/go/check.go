// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Plan is what `sbx-supervisor check` says a spec would launch, without launching it.
type Plan struct {
	// ID and Kind are the spec's.
	ID   string  `json:"id"`
	Kind VMMKind `json:"kind"`
	// Argv is the VMM's argv as the helper would execute it: the binary, the kind's API flag,
	// then the spec's args.
	Argv []string `json:"argv"`
	// SandboxDir is where the tmpfs and the links go.
	SandboxDir string `json:"sandbox_dir"`
	// Links maps the names made in the sandbox dir to their targets.
	Links map[string]string `json:"links"`
	// Netns is the network namespace joined; empty for the caller's.
	Netns string `json:"netns"`
	// PIDNamespace and Jail are what the VMM will run under.
	PIDNamespace bool `json:"pid_namespace"`
	Jail         bool `json:"jail"`
	// Files is what the helper would be sent with files or a jail; nil without.
	Files *Files `json:"files"`
	// APISocketDir is the API socket's directory sent with files or a jail.
	APISocketDir string `json:"api_socket_dir"`
	// Cgroup is the sandbox's cgroup, nil without one.
	Cgroup *PlanCgroup `json:"cgroup"`
	// Raw is the supervisor's JSON, for members this package does not know.
	Raw json.RawMessage `json:"-"`
}

// PlanCgroup is the cgroup part of a Plan.
type PlanCgroup struct {
	// Parent is the spec's parent; empty when it comes from --cgroup-parent at run time.
	Parent string `json:"parent"`
	// Files maps each kernel file (memory.max, cpu.max, ...) to the value to be written.
	Files map[string]string `json:"files"`
}

// Check validates spec with `sbx-supervisor check --spec -` and returns its plan. A refused
// spec gives a *SpecError naming the field. Only WithSupervisor matters among the options.
// ctx bounds the command: cancelled, it is killed.
func Check(ctx context.Context, spec Spec, opts ...Option) (*Plan, error) {
	o := buildOptions(opts)
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("sbx: encode spec: %w", err)
	}
	// A short-lived command, unlike `run`: tying it to ctx is what the caller asks for.
	cmd := exec.CommandContext(ctx, o.supervisor, "check", "--spec", "-")
	cmd.Stdin = bytes.NewReader(specJSON)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if runErr != nil {
		lines := strings.Split(stderr.String(), "\n")
		if specErr := parseSpecError(lines); specErr != nil {
			return nil, specErr
		}
		var exitErr *exec.ExitError
		if errors.As(runErr, &exitErr) {
			return nil, fmt.Errorf("sbx: sbx-supervisor check: %v: %s", runErr, supervisorMessage(lines))
		}
		return nil, fmt.Errorf("sbx: sbx-supervisor check: %w", runErr)
	}
	var plan Plan
	if err := json.Unmarshal(stdout.Bytes(), &plan); err != nil {
		return nil, fmt.Errorf("sbx: sbx-supervisor check printed %q: %w", stdout.String(), err)
	}
	plan.Raw = append(json.RawMessage(nil), bytes.TrimSpace(stdout.Bytes())...)
	return &plan, nil
}

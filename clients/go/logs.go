// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// logTail copies the supervisor's output to the caller's writer line by line and keeps its
// last lines, so a launch that failed before any event can say why.
type logTail struct {
	out  io.Writer
	done chan struct{} // closed at EOF

	writeMu sync.Mutex // one line at a time to out
	mu      sync.Mutex
	lines   []string
}

const (
	logTailLines   = 64
	logTailLineMax = 4096
)

func newLogTail(out io.Writer) *logTail {
	return &logTail{out: out, done: make(chan struct{})}
}

// copyFrom reads r to EOF, then closes it.
func (t *logTail) copyFrom(r io.ReadCloser) {
	defer close(t.done)
	defer r.Close()
	br := bufio.NewReaderSize(r, logTailLineMax)
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			t.write(chunk)
			t.keep(chunk)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// note adds a line of this package's own (an event it could not decode) to the log.
func (t *logTail) note(msg string) {
	line := []byte("sbx: " + msg + "\n")
	t.write(line)
	t.keep(line)
}

// line adds a line of a supervisor command's own (events, stop) to the log.
func (t *logTail) line(b []byte) {
	t.write(b)
	t.keep(b)
}

func (t *logTail) write(b []byte) {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	_, _ = t.out.Write(b) // the log is best effort: the sandbox does not depend on it
}

func (t *logTail) keep(chunk []byte) {
	line := string(chunk)
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > logTailLines {
		t.lines = append(t.lines[:0:0], t.lines[len(t.lines)-logTailLines:]...)
	}
}

// snapshot returns the lines kept, after waiting at most `wait` for EOF: once the supervisor
// is reaped only a leftover that kept the pipe (none, when it cleaned up) can delay it.
func (t *logTail) snapshot(wait time.Duration) []string {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-t.done:
	case <-timer.C:
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}

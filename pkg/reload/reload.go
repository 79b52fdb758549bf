// Package reload keeps a served policy in step with its file. It watches the
// file's directory (so it survives the atomic symlink swap with which the
// kubelet updates a mounted ConfigMap, and editors that write a new file and
// rename it over the old one), compares the file's bytes on a poll for file
// systems without events, and reloads on SIGHUP too. A new policy is
// compiled and validated completely before one atomic pointer store swaps it
// in: a review reads the pointer once, so it sees the old policy or the new
// one, never a mix. A file that fails to load changes nothing: the last good
// policy keeps serving, and the failure is logged and counted.
package reload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/imagegate/imagegate/pkg/policy"
)

// DefaultDebounce is how long the watcher waits after the last change
// before it reloads, so a burst of events (an editor's write, chmod and
// rename; the kubelet's swap) is one reload. A writer that never stops
// cannot put it off by more than maxWait after the first event.
const DefaultDebounce = 100 * time.Millisecond

const maxWait = time.Second

// DefaultPoll is how often the file's bytes are compared with those last
// loaded, for file systems that send no events; a change found is
// reloaded like one the watch saw.
const DefaultPoll = 30 * time.Second

// LoadFunc compiles the policy file, returning its lint warnings.
type LoadFunc func() (*policy.Policy, []string, error)

// Reloader swaps Active to the policy Load returns whenever the file at
// Path changes or Run is told to reload.
type Reloader struct {
	// Path is the policy file; its directory is watched.
	Path string
	// Load compiles the policy file.
	Load LoadFunc
	// Active is the policy the server reads once per request.
	Active *atomic.Pointer[policy.Policy]
	// Log receives one line per reload attempt.
	Log *slog.Logger
	// Observe, when set, is told about every reload attempt: ok, and the
	// hash of the policy in force afterwards (e.g. metrics).
	Observe func(ok bool, hash string)
	// Debounce overrides DefaultDebounce, and Poll DefaultPoll.
	Debounce, Poll time.Duration

	mu        sync.Mutex // one reload at a time
	attempts  atomic.Uint64
	failures  atomic.Uint64
	lastError atomic.Pointer[string]
	loaded    [sha256.Size]byte // of the bytes last loaded, guarded by mu
}

// Attempts and Failures count reload attempts and failed ones.
func (r *Reloader) Attempts() uint64 { return r.attempts.Load() }

// Failures counts reloads that failed and left the last good policy serving.
func (r *Reloader) Failures() uint64 { return r.failures.Load() }

// LastError is why the last reload failed, or "" when it succeeded.
func (r *Reloader) LastError() string {
	if s := r.lastError.Load(); s != nil {
		return *s
	}
	return ""
}

// Reload loads the file now and swaps the policy in if it is valid and
// different; trigger says why, for the log. On error the active policy is
// unchanged.
func (r *Reloader) Reload(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.attempts.Add(1) // counted after the log line, so whoever sees the count sees the line
	old := r.Active.Load()
	r.loaded = fileSum(r.Path) // before Load: a change after it is seen by the next poll
	p, warnings, err := r.Load()
	if err != nil {
		// Log, then count, as for attempts.
		n := r.failures.Load() + 1 // reloads are serialised by mu
		msg := err.Error()
		r.Log.Error("policy reload failed; the last good policy keeps serving",
			"trigger", trigger, "file", r.Path, "policy", hashOf(old), "failures", n, "err", err)
		r.lastError.Store(&msg)
		r.failures.Add(1)
		if r.Observe != nil {
			r.Observe(false, hashOf(old))
		}
		return err
	}
	r.lastError.Store(nil)
	if old != nil && old.Hash() == p.Hash() {
		r.Log.Debug("policy file changed, policy unchanged", "trigger", trigger, "file", r.Path, "policy", p.Hash())
	} else {
		for _, w := range warnings {
			r.Log.Warn("policy warning", "warning", w)
		}
		r.Active.Store(p)
		r.Log.Info("policy reloaded", "trigger", trigger, "file", r.Path, "policy", p.Hash(), "previous", hashOf(old))
	}
	if r.Observe != nil {
		r.Observe(true, p.Hash())
	}
	return nil
}

// fileSum is the checksum of the file's bytes; a file that cannot be read
// sums to zero, so its return is a change.
func fileSum(path string) [sha256.Size]byte {
	data, err := os.ReadFile(path) //nolint:gosec // the operator's policy file
	if err != nil {
		return [sha256.Size]byte{}
	}
	return sha256.Sum256(data)
}

func hashOf(p *policy.Policy) string {
	if p == nil {
		return ""
	}
	return p.Hash()
}

// Run watches the file and reloads it on change (seen by the watch, or by
// the poll), and on every value from signals (SIGHUP), until ctx is done. It returns an error only when the
// watch cannot be set up.
func (r *Reloader) Run(ctx context.Context, signals <-chan os.Signal) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy file: %w", err)
	}
	defer w.Close()
	path, err := filepath.Abs(r.Path)
	if err != nil {
		return fmt.Errorf("watch policy file: %w", err)
	}
	// Watch the directory, not the file: a watch on the file follows the
	// inode, which a rename or a symlink swap replaces.
	dir := filepath.Dir(path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch policy file directory %s: %w", dir, err)
	}
	// A symlink to a file elsewhere (not the ConfigMap layout, whose
	// "..data" swap happens in dir) is followed: its target's directory is
	// watched too, and re-resolved after every change.
	targetDir := ""
	follow := func() {
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			return
		}
		if td := filepath.Dir(target); td != dir && td != targetDir && !isConfigMapDir(dir, td) {
			if targetDir != "" {
				_ = w.Remove(targetDir)
			}
			if w.Add(td) == nil {
				targetDir = td
			}
		}
	}
	follow()
	debounce := r.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	poll := r.Poll
	if poll <= 0 {
		poll = DefaultPoll
	}
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	r.mu.Lock()
	r.loaded = fileSum(r.Path) // the policy serving was loaded from these, or near enough
	r.mu.Unlock()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var first time.Time // of the pending run of events; zero when none is
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-signals:
			if ok {
				_ = r.Reload("SIGHUP")
			}
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("policy file watcher closed")
			}
			if r.relevant(ev, path, dir, targetDir) {
				now := time.Now()
				if first.IsZero() {
					first = now
				}
				timer.Reset(min(debounce, first.Add(maxWait).Sub(now)))
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("policy file watcher closed")
			}
			r.Log.Warn("policy file watcher", "err", err)
		case <-timer.C:
			first = time.Time{}
			_ = r.Reload("file changed")
			follow()
		case <-ticker.C:
			r.mu.Lock()
			changed := fileSum(r.Path) != r.loaded
			r.mu.Unlock()
			if changed {
				_ = r.Reload("file changed (poll)")
				follow()
			}
		}
	}
}

// relevant reports whether ev may have changed what path reads: the file
// itself, the ConfigMap's "..data" symlink, or anything in the followed
// symlink target's directory.
func (r *Reloader) relevant(ev fsnotify.Event, path, dir, targetDir string) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Clean(ev.Name)
	switch {
	case name == path, name == filepath.Join(dir, "..data"):
		return true
	case targetDir != "" && filepath.Dir(name) == targetDir:
		return true
	}
	return false
}

// isConfigMapDir reports whether td is one of the kubelet's timestamped
// directories inside dir ("dir/..2025_01_31_12_00_00.123"), which the
// "..data" symlink in dir already tells about.
func isConfigMapDir(dir, td string) bool {
	return filepath.Dir(td) == dir && len(filepath.Base(td)) > 2 && filepath.Base(td)[:2] == ".."
}

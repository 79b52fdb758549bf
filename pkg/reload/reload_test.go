package reload_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/reload"
	"github.com/imagegate/imagegate/pkg/server"
)

// Two policies that answer the probe review differently: A allows
// registry.a.example.com in team-a, B denies it there.
const (
	policyA = `apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  allowedRegistries: [registry.my.com]
rules:
  - name: team-a
    namespaces: [team-a]
    allowedRegistries: [registry.my.com, registry.a.example.com]
`
	policyB = `apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  allowedRegistries: [registry.my.com]
rules:
  - name: team-a
    namespaces: [team-a]
    allowedRegistries: [registry.my.com]
    requireDigest: true
`
	broken = `apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  allowedRegistries: [registry.my.com]
  allowedRegistry: [oops]
`
	probe = `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"registry.a.example.com/app:1"}],"namespace":"team-a"}}`
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// configMap lays out dir as the kubelet does for a mounted ConfigMap:
// dir/..<ts>/policy.yaml, dir/..data -> ..<ts>, dir/policy.yaml ->
// ..data/policy.yaml. Each update writes a new timestamped directory,
// points ..data_tmp at it and renames ..data_tmp over ..data (one atomic
// rename), then removes the old directory.
type configMap struct {
	t   *testing.T
	dir string
	n   int
	cur string
}

func newConfigMap(t *testing.T, content string) *configMap {
	c := &configMap{t: t, dir: t.TempDir()}
	c.update(content)
	if err := os.Symlink(filepath.Join("..data", "policy.yaml"), filepath.Join(c.dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *configMap) path() string { return filepath.Join(c.dir, "policy.yaml") }

func (c *configMap) update(content string) {
	c.t.Helper()
	c.n++
	ts := fmt.Sprintf("..2025_06_01_12_00_%02d.%d", c.n, c.n)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, ts, "policy.yaml"), []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		c.t.Fatal(err)
	}
	if c.cur != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, c.cur)); err != nil {
			c.t.Fatal(err)
		}
	}
	c.cur = ts
}

type harness struct {
	active   atomic.Pointer[policy.Policy]
	handler  http.Handler
	reloader *reload.Reloader
	logs     *syncBuffer
	hup      chan os.Signal
}

// loader compiles the policy file at path as serve does.
func loader(path string) reload.LoadFunc {
	pc := config.DefaultPolicy()
	pc.File = path
	return pc.Compile
}

func newHarness(t *testing.T, path string) *harness {
	t.Helper()
	return newHarnessWith(t, path, 20*time.Millisecond, 0)
}

// newHarnessWith is newHarness with the reloader's debounce and poll.
func newHarnessWith(t *testing.T, path string, debounce, poll time.Duration) *harness {
	t.Helper()
	h := &harness{logs: &syncBuffer{}, hup: make(chan os.Signal, 1)}
	load := loader(path)
	p, _, err := load()
	if err != nil {
		t.Fatal(err)
	}
	h.active.Store(p)
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.handler = server.New(server.Options{Policy: &h.active}).Handler()
	h.reloader = &reload.Reloader{Path: path, Load: load, Active: &h.active, Log: log, Debounce: debounce, Poll: poll}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.reloader.Run(ctx, h.hup) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	time.Sleep(50 * time.Millisecond) // let the watch start
	return h
}

func (h *harness) review(t testing.TB, path, body string) string {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("review answered %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func (h *harness) ready(t *testing.T) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, server.PathReadyz, nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/readyz = %d %s, want 200", rec.Code, rec.Body)
	}
}

// answer is the exact reply a policy gives to the probe.
func answer(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _, err := loader(path)()
	if err != nil {
		t.Fatal(err)
	}
	var active atomic.Pointer[policy.Policy]
	active.Store(p)
	req := httptest.NewRequest(http.MethodPost, server.PathImagePolicy, strings.NewReader(probe))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	server.New(server.Options{Policy: &active}).Handler().ServeHTTP(rec, req)
	return rec.Body.String()
}

// settle bounds how long a file change may take to reach the answers. The
// watcher reloads 20 ms (in production 100 ms) after the last event; the
// margin is for a loaded CI machine running everything under -race.
const settle = 3 * time.Second

// waitFor polls until the probe's answer is want.
func waitFor(t *testing.T, h *harness, want, what string) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for h.review(t, server.PathImagePolicy, probe) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not take effect within %s; logs:\n%s", what, settle, h.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitForLog waits, at most settle, until the log holds each of lines: the
// reloader stores a policy before it logs why, so the line may follow the
// first answer under the new policy by a moment.
func waitForLog(h *harness, lines ...string) {
	for deadline := time.Now().Add(settle); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		logs := h.logs.String()
		if !slices.ContainsFunc(lines, func(l string) bool { return !strings.Contains(logs, l) }) {
			return
		}
	}
}

// TestReloadUnderLoad rewrites a ConfigMap-style mounted policy while
// reviews run concurrently: every answer is exactly the old policy's or the
// new one's, a broken file changes nothing and says why, and /readyz stays
// ready. Run it with -race.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	wantA, wantB := answer(t, policyA), answer(t, policyB)
	if wantA == wantB || !strings.Contains(wantA, `"allowed":true`) || !strings.Contains(wantB, `"allowed":false`) {
		t.Fatalf("the two policies must answer the probe differently:\nA %s\nB %s", wantA, wantB)
	}
	cm := newConfigMap(t, policyA)
	h := newHarness(t, cm.path())
	hashA := h.active.Load().Hash()

	var stop atomic.Bool
	var wg sync.WaitGroup
	var reviews, mixed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				got := h.review(t, server.PathImagePolicy, probe)
				reviews.Add(1)
				if got != wantA && got != wantB {
					mixed.Add(1)
					t.Errorf("an answer matches neither policy:\n%s", got)
				}
			}
		}()
	}

	cm.update(policyB) // the kubelet's atomic symlink swap
	waitFor(t, h, wantB, "the ConfigMap swap to policy B")
	hashB := h.active.Load().Hash()

	failures := h.reloader.Failures()
	cm.update(broken)
	deadline := time.Now().Add(settle)
	for h.reloader.Failures() == failures {
		if time.Now().After(deadline) {
			t.Fatalf("the broken file was not noticed within %s; logs:\n%s", settle, h.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // reviews keep running on B
	if got := h.active.Load().Hash(); got != hashB {
		t.Errorf("active policy %s after a broken file, want B's %s", got, hashB)
	}
	if got := h.review(t, server.PathImagePolicy, probe); got != wantB {
		t.Errorf("after the broken file the answer is\n%s\nwant B's\n%s", got, wantB)
	}
	if !strings.Contains(h.reloader.LastError(), `unknown field "allowedRegistry" in default`) {
		t.Errorf("LastError() = %q, want the file's error", h.reloader.LastError())
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "policy reload failed; the last good policy keeps serving") || !strings.Contains(logs, "policy.yaml:5: unknown field") {
		t.Errorf("the log does not say why the reload failed:\n%s", logs)
	}
	h.ready(t)

	cm.update(policyA) // fixed: back to A
	waitFor(t, h, wantA, "the fix back to policy A")
	if got := h.active.Load().Hash(); got != hashA {
		t.Errorf("active policy %s, want A's %s", got, hashA)
	}
	if h.reloader.LastError() != "" {
		t.Errorf("LastError() = %q after a good reload", h.reloader.LastError())
	}

	stop.Store(true)
	wg.Wait()
	t.Logf("%d concurrent reviews, %d reload attempts, %d failed", reviews.Load(), h.reloader.Attempts(), h.reloader.Failures())
	if mixed.Load() > 0 {
		t.Errorf("%d answers matched neither policy", mixed.Load())
	}
	if !strings.Contains(logs, "policy reloaded") || !strings.Contains(logs, "policy="+hashB) {
		t.Errorf("the log does not name the new policy's hash %s:\n%s", hashB, logs)
	}
}

// Editors save by writing a new file and renaming it over the old one (vim,
// most IDEs), or by truncating and rewriting it in place.
func TestReloadAfterEditorSaves(t *testing.T) {
	t.Parallel()
	wantA, wantB := answer(t, policyA), answer(t, policyB)
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(policyA), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, path)

	tmp := filepath.Join(dir, ".policy.yaml.swp")
	if err := os.WriteFile(tmp, []byte(policyB), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, h, wantB, "a rename over the file")

	if err := os.WriteFile(path, []byte(policyA), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, h, wantA, "a rewrite in place")

	// Removed, then written again: the removal is a failed reload that
	// keeps A; the new file is picked up.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := h.review(t, server.PathImagePolicy, probe); got != wantA {
		t.Errorf("after removing the file the answer is %s, want A's", got)
	}
	h.ready(t)
	if err := os.WriteFile(path, []byte(policyB), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, h, wantB, "the file written again")
}

// SIGHUP reloads without any file event, e.g. on a file system without
// inotify; an unchanged policy is not swapped.
func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(policyA), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, path)
	before := h.active.Load()
	attempts := h.reloader.Attempts()
	h.hup <- syscall.SIGHUP
	deadline := time.Now().Add(settle)
	for h.reloader.Attempts() == attempts {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if h.active.Load() != before {
		t.Error("an unchanged policy was swapped")
	}
	if !strings.Contains(h.logs.String(), "policy file changed, policy unchanged") || !strings.Contains(h.logs.String(), "trigger=SIGHUP") {
		t.Errorf("logs:\n%s", h.logs.String())
	}
}

// TestWatchAndPollBackstops holds the two backstops of the watch: the poll
// finds a change the events did not bring in time (as on a file system
// without events), and a run of events cannot postpone a reload past the
// maximum wait. A debounce of an hour keeps the ordinary path out of it.
func TestWatchAndPollBackstops(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		poll    time.Duration
		trigger string
	}{
		{name: "the poll reloads a change", poll: 20 * time.Millisecond, trigger: "file changed (poll)"},
		{name: "the debounce waits at most a second", poll: time.Hour, trigger: `trigger="file changed"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(path, []byte(policyA), 0o644); err != nil {
				t.Fatal(err)
			}
			h := newHarnessWith(t, path, time.Hour, tc.poll)
			before := h.review(t, server.PathImagePolicy, probe)
			if err := os.WriteFile(path, []byte(policyB), 0o644); err != nil {
				t.Fatal(err)
			}
			waitFor(t, h, answer(t, policyB), "the edit")
			waitForLog(h, tc.trigger)
			if h.review(t, server.PathImagePolicy, probe) == before || !strings.Contains(h.logs.String(), tc.trigger) {
				t.Errorf("want a reload by %q; logs:\n%s", tc.trigger, h.logs.String())
			}
		})
	}
}

// Reload reports to Observe (metrics) after every attempt.
func TestReloadObserves(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(policyA), 0o644); err != nil {
		t.Fatal(err)
	}
	var active atomic.Pointer[policy.Policy]
	var got []string
	r := &reload.Reloader{
		Path: path, Active: &active, Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)),
		Load:    loader(path),
		Observe: func(ok bool, hash string) { got = append(got, fmt.Sprintf("%v %s", ok, hash)) },
	}
	if err := r.Reload("test"); err != nil {
		t.Fatal(err)
	}
	hash := active.Load().Hash()
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload("test"); err == nil {
		t.Fatal("a broken file reloaded")
	}
	if want := []string{"true " + hash, "false " + hash}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Observe calls %q, want %q", got, want)
	}
	if r.Failures() != 1 || r.Attempts() != 2 || active.Load().Hash() != hash {
		t.Errorf("failures %d attempts %d hash %s, want 1, 2 and %s", r.Failures(), r.Attempts(), active.Load().Hash(), hash)
	}
}

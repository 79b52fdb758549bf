// Command stress runs imagegate under hostile load and prints what it did:
// one table, one row per scenario, and exit status 1 if any scenario fails.
// `make stress` builds imagegate and runs it from the repository root.
//
// Method. For each scenario stress execs the built binary afresh (so its
// peak RSS, VmHWM in /proc/PID/status, belongs to that scenario alone) on
// two free loopback ports with a throwaway ECDSA certificate, the memory
// limit and GOMEMLIMIT of the container in config/deployment.yaml (read at
// run time, so it tests what ships) and GOMAXPROCS=2, and waits for
// /readyz. A "real apiserver" then opens two HTTP/2 connections and keeps
// them, as the apiserver does, and throughout the flood sends 20 genuine
// reviews a second (an allowed ImageReview of 3 containers, a denied one
// naming evil.io/backdoor:1, a Deployment's AdmissionReview), one in ten
// over a fresh connection. Meanwhile the scenario floods the server:
// reviews too large or too rich, request bodies that never end over
// HTTP/1.1 and HTTP/2, idle HTTP/2 connections by the thousand, or a YAML
// alias bomb written over the policy file. RSS is sampled every 50 ms; a
// flood is stopped early if it reaches 8 times the limit, to spare the
// machine. Every request goes to 127.0.0.1, and every loop is bounded in
// count and by the scenario's deadline (-timeout: 60 s, 20 s with -short).
//
// PASS means: the process is alive at the end; its peak RSS stayed below
// the container's memory limit; every real review got HTTP 200 and the
// right decision within 5 s (the webhooks' timeoutSeconds); and every
// hostile review that is still a genuine review got a 200 decision in its
// own format with the verdict, the uid and the bounded reason it must
// have, within those 5 s too.
//
// Usage: stress [-short] [-binary bin/imagegate] [-scenario a,b] [-timeout 60s]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// scenario is one hostile load. run floods t until ctx is done or its
// work is over, recording answers and failed checks in o.
type scenario struct {
	name   string
	policy bool // serve smallPolicy with --config
	run    func(ctx context.Context, t *target, o *outcome)
}

var scenarios = []scenario{
	{name: "huge-imagereview", run: hugeImageReview},
	{name: "escaped-update", run: escapedUpdate},
	{name: "over-limit", run: overLimit},
	{name: "held-bodies-http1", run: heldHTTP1(3 << 20)},
	{name: "held-bodies-http1-20mib", run: heldHTTP1(20 << 20)},
	{name: "held-bodies-http2", run: heldHTTP2},
	{name: "idle-http2", run: idleHTTP2},
	{name: "many-violations", run: manyViolations},
	{name: "alias-bomb-reload", policy: true, run: aliasBombReload},
}

// safetyFactor times the memory limit stops a flood early.
const safetyFactor = 8

// settings are the run's, shared by every scenario.
type settings struct {
	launch
	short   bool
	timeout time.Duration
	reviews []review
	nofile  uint64 // the open-file limit, this process's and the child's
	warning string // why it is lower than idle-http2 needs
}

// target is what a scenario floods: the running server, and the run's
// settings. root outlives the flood's deadline, for requests that must be
// answered even if they started just before it.
type target struct {
	*process
	*settings
	root       context.Context
	policyFile string
}

func main() {
	short := flag.Bool("short", false, "a 20 s deadline per scenario and fewer rounds of the one-shot reviews")
	binary := flag.String("binary", "bin/imagegate", "imagegate binary to run")
	only := flag.String("scenario", "", "comma-separated scenarios to run, of "+names()+" (default: all)")
	timeout := flag.Duration("timeout", 0, "deadline per scenario (default 60s, 20s with -short)")
	deployment := flag.String("deployment", "config/deployment.yaml", "Deployment whose memory limit and GOMEMLIMIT to use")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code, err := run(ctx, *short, *binary, *only, *timeout, *deployment)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress:", err)
		code = 2
	}
	os.Exit(code)
}

func run(ctx context.Context, short bool, binary, only string, timeout time.Duration, deployment string) (int, error) {
	chosen, err := choose(only)
	if err != nil {
		return 0, err
	}
	s := &settings{short: short, timeout: timeout}
	switch {
	case s.timeout > 0:
	case short:
		s.timeout = 20 * time.Second
	default:
		s.timeout = 60 * time.Second
	}
	if s.ship, err = readDeployment(deployment); err != nil {
		return 0, err
	}
	if s.binary, err = filepath.Abs(binary); err != nil {
		return 0, err
	}
	if s.reviews, err = realReviews(); err != nil {
		return 0, err
	}
	if s.nofile, err = raiseNofile(2*idleConns + 1024); err != nil {
		s.warning = err.Error()
	}
	dir, err := os.MkdirTemp("", "imagegate-stress-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	if s.certFile, s.keyFile, s.pool, err = writeCert(dir); err != nil {
		return 0, fmt.Errorf("throwaway certificate: %w", err)
	}

	begin, loadBefore := time.Now(), loadavg()
	var results []result
	for _, sc := range chosen {
		if ctx.Err() != nil {
			break
		}
		slog.Info("scenario starting", "scenario", sc.name, "deadline", s.timeout)
		r := runScenario(ctx, sc, s)
		slog.Info("scenario done", "scenario", sc.name, "pass", r.pass, "took", r.took.Round(time.Millisecond))
		results = append(results, r)
	}
	report(os.Stdout, s, results, loadBefore, loadavg(), time.Since(begin))
	for _, r := range results {
		if !r.pass {
			return 1, ctx.Err()
		}
	}
	return 0, ctx.Err()
}

func choose(only string) ([]scenario, error) {
	if only == "" {
		return scenarios, nil
	}
	var out []scenario
	for name := range strings.SplitSeq(only, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(scenarios, func(sc scenario) bool { return sc.name == name })
		if i < 0 {
			return nil, fmt.Errorf("no scenario %q (see -help)", name)
		}
		out = append(out, scenarios[i])
	}
	return out, nil
}

func names() string {
	var out []string
	for _, sc := range scenarios {
		out = append(out, sc.name)
	}
	return strings.Join(out, ", ")
}

// result is one scenario's row in the table and its lines below it.
type result struct {
	name            string
	peak            int64
	o               *outcome
	realOK, realAll int
	pass            bool
	took            time.Duration
}

// runScenario starts imagegate, floods it with sc while the real apiserver
// sends its reviews, and judges the outcome.
func runScenario(root context.Context, sc scenario, s *settings) (r result) {
	begin := time.Now()
	r = result{name: sc.name, o: newOutcome()}
	defer func() { r.took = time.Since(begin) }()
	dir, err := os.MkdirTemp("", "imagegate-stress-"+sc.name+"-")
	if err != nil {
		r.o.fail("temporary directory: %v", err)
		return r
	}
	defer os.RemoveAll(dir)
	t := &target{settings: s, root: root}
	if sc.policy {
		t.policyFile = filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(t.policyFile, []byte(smallPolicy), 0o600); err != nil {
			r.o.fail("write the policy file: %v", err)
			return r
		}
	}
	if t.process, err = start(root, s.launch, t.policyFile); err != nil {
		r.o.fail("start imagegate: %v", err)
		return r
	}
	defer t.stop()
	api, err := newAPIServer(root, t.addr, t.tls, s.reviews)
	if err != nil {
		r.o.fail("%v", err)
		return r
	}

	flood, stopFlood := context.WithTimeout(root, s.timeout)
	defer stopFlood()
	go t.sample(flood, s.ship.limit*safetyFactor, func(rss int64) {
		r.o.fail("RSS reached %s MiB, %d× the limit: flood stopped early", mib(rss), safetyFactor)
		stopFlood()
	})
	realCtx, stopReal := context.WithCancel(flood)
	realDone := make(chan struct{})
	go func() { api.run(realCtx, int(s.timeout/(50*time.Millisecond))+1); close(realDone) }()
	sc.run(flood, t, r.o)
	stopReal()
	<-realDone

	r.assess(t.process, api, s.ship)
	return r
}

// assess decides PASS from the process's fate, its peak RSS, the real
// reviews and the scenario's own checks.
func (r *result) assess(srv *process, api *apiserver, ship shipped) {
	var err error
	if r.peak, err = srv.status("VmHWM"); err != nil && srv.alive() {
		r.o.fail("read peak RSS: %v", err)
	}
	if !srv.alive() {
		r.o.fail("imagegate exited (%v); the end of its log:\n%s", srv.exitErr, srv.logs)
	}
	if r.peak >= ship.limit {
		r.o.fail("peak RSS %s MiB is not below the %s limit", mib(r.peak), ship.limitText)
	}
	api.mu.Lock()
	r.realOK, r.realAll = api.ok, api.total
	r.o.failures = append(r.o.failures, api.failures...)
	api.mu.Unlock()
	if r.realAll == 0 {
		r.o.fail("no real review was sent")
	}
	r.o.note("%s", api.summary())
	r.pass = len(r.o.failures) == 0
}

// report prints the table, each scenario's figures and failures, and the
// final line.
func report(w io.Writer, s *settings, results []result, before, after string, took time.Duration) {
	gml := s.ship.gomemlimit
	if gml == "" {
		gml = "none"
	}
	fmt.Fprintf(w, "\nimagegate stress, %s, commit %s, %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), commit(), s.binary)
	fmt.Fprintf(w, "machine: %d CPUs, load average before: %s, after: %s\n", runtime.NumCPU(), before, after)
	fmt.Fprintf(w, "as shipped: memory limit %s, GOMEMLIMIT %s; GOMAXPROCS=2, open files %d; %s per scenario%s\n\n",
		s.ship.limitText, gml, s.nofile, s.timeout, map[bool]string{true: " (-short)"}[s.short])
	fmt.Fprintln(w, "| scenario | peak RSS MiB (limit MiB) | answers | p50 / max time to answer | real reviews ok/total | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	passed := 0
	for _, r := range results {
		verdict := "FAIL"
		if r.pass {
			verdict, passed = "PASS", passed+1
		}
		fmt.Fprintf(w, "| %s | %s (%s) | %s | %s / %s | %d/%d | %s |\n", r.name, mib(r.peak), mib(s.ship.limit),
			statusCounts(r.o.statuses), ms(quantile(r.o.times, 0.5)), ms(quantile(r.o.times, 1)), r.realOK, r.realAll, verdict)
	}
	fmt.Fprintln(w)
	if s.warning != "" {
		fmt.Fprintf(w, "warning: %s\n", s.warning)
	}
	for _, r := range results {
		fmt.Fprintf(w, "%s (%s):\n", r.name, r.took.Round(100*time.Millisecond))
		for _, n := range r.o.notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
		failures := dedupe(r.o.failures)
		for i, f := range failures {
			if i == 5 {
				fmt.Fprintf(w, "  FAIL: … and %d more\n", len(failures)-5)
				break
			}
			fmt.Fprintf(w, "  FAIL: %s\n", f)
		}
	}
	verdict := "PASS"
	if passed < len(results) {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\nstress: %s, %d of %d scenarios passed in %s\n", verdict, passed, len(results), took.Round(time.Second))
}

// loadavg is the 1, 5 and 15 minute load averages, as bench.sh prints them.
func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	return strings.Join(f[:min(3, len(f))], " ")
}

func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

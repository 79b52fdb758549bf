// Package cli implements imagegate's command line: flags, then config, then
// the serve, check and version subcommands.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/spf13/pflag"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/certs"
	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/digest"
	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/server"
	"github.com/imagegate/imagegate/pkg/version"
)

// Exit codes.
const (
	ExitOK     = 0 // success; check: every image allowed
	ExitDenied = 1 // check: at least one image denied; serve: failed
	ExitUsage  = 2 // bad flags or arguments
)

// App is the command line. Its fields are its environment, so tests can
// capture output and replace the server.
type App struct {
	Stdout, Stderr io.Writer
	// Stdin is what audit reads with -f -.
	Stdin     io.Reader
	LookupEnv func(string) (string, bool)
	// Serve runs the server with the final config and the policy compiled
	// from it; tests replace it to check flag and environment precedence
	// without listening.
	Serve func(ctx context.Context, cfg config.Config, p *policy.Policy, log *slog.Logger) error
}

// New returns the App wired to the process's environment.
func New() *App {
	return &App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, LookupEnv: os.LookupEnv, Serve: RunServer}
}

const usage = `imagegate decides which container images a Kubernetes cluster may run.

Usage:
  imagegate serve [flags]            serve the ImagePolicyWebhook, validating- and mutating-webhook backends over HTTPS
  imagegate check [flags] IMAGE...   judge images offline with the same policy flags or --config file
  imagegate audit -f FILE|- [flags]  report what already runs (kubectl get ... -A -o json) that the policy refuses
  imagegate audit [--kubeconfig F]   the same, listing the live cluster (in a pod: its service account)
  imagegate version                  print the version

Run 'imagegate COMMAND --help' for a command's flags. For kube-image-bouncer
compatibility, flags without a command mean 'serve'.
`

// Run runs the command line args (without the program name) and returns the
// process exit code.
func (a *App) Run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(a.Stderr, usage)
		return ExitUsage
	}
	cmd, rest := args[0], args[1:]
	switch {
	case cmd == "serve":
		return a.serve(ctx, rest)
	case cmd == "check":
		return a.check(rest)
	case cmd == "audit":
		return a.audit(ctx, rest)
	case cmd == "version":
		fmt.Fprintln(a.Stdout, version.String())
		return ExitOK
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(a.Stdout, usage)
		return ExitOK
	case strings.HasPrefix(cmd, "-"):
		return a.serve(ctx, args) // kube-image-bouncer had no subcommands
	default:
		fmt.Fprintf(a.Stderr, "imagegate: unknown command %q\n\n%s", cmd, usage)
		return ExitUsage
	}
}

// parse parses args into fs, printing help or the error. ok is false when
// the caller should return code.
func (a *App) parse(fs *pflag.FlagSet, args []string) (code int, ok bool) {
	fs.SetOutput(a.Stderr)
	// pflag prints the usage itself on --help, to the output above: muted,
	// so that it is printed once, to standard output.
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, pflag.ErrHelp):
		fs.SetOutput(a.Stdout)
		fs.Usage()
		return ExitOK, false
	case err != nil: // with ContinueOnError, pflag prints nothing itself
		fmt.Fprintf(a.Stderr, "imagegate %s: %v\nRun 'imagegate %s --help' for usage.\n", fs.Name(), err, fs.Name())
		return ExitUsage, false
	}
	return 0, true
}

func (a *App) serve(ctx context.Context, args []string) int {
	cfg := config.Default()
	if err := cfg.ApplyEnv(a.LookupEnv); err != nil {
		fmt.Fprintf(a.Stderr, "imagegate serve: %v\n", err)
		return ExitUsage
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	cfg.AddServeFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: imagegate serve [flags]\n\nServe the ImagePolicyWebhook backend (POST %s), the validating admission webhook (POST %s) and the mutating admission webhook that rewrites images to mirrors (POST %s) over HTTPS.\n\nFlags:\n%s", server.PathImagePolicy, server.PathValidate, server.PathMutate, fs.FlagUsages())
	}
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(a.Stderr, "imagegate serve: unexpected arguments %q\n", fs.Args())
		return ExitUsage
	}
	if fs.Changed("listen") && fs.Changed("port") {
		fmt.Fprintln(a.Stderr, "imagegate serve: use --listen or --port, not both")
		return ExitUsage
	}
	if fs.Changed("listen") {
		cfg.Port = 0 // the --listen flag names its port and beats BOUNCER_PORT
	}
	cfg.Policy.MarkExplicit(fs, a.LookupEnv)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(a.Stderr, "imagegate serve: invalid configuration:\n%v\n", err)
		return ExitUsage
	}
	p, warnings, err := cfg.Policy.Compile()
	if err != nil {
		fmt.Fprintf(a.Stderr, "imagegate serve: %v\n", err)
		return ExitUsage
	}
	log := newLogger(cfg, a.Stderr)
	for _, w := range warnings {
		log.Warn("policy warning", "warning", w)
	}
	if err := a.Serve(ctx, cfg, p, log); err != nil {
		log.Error("imagegate stopped", "err", err)
		return ExitDenied
	}
	return ExitOK
}

// RunServer serves p, and reloads of the policy file, as cfg says until
// ctx is done.
func RunServer(ctx context.Context, cfg config.Config, p *policy.Policy, log *slog.Logger) error {
	var active atomic.Pointer[policy.Policy]
	active.Store(p)
	// One recorder for the server, its certificates and whoever swaps the
	// policy: call rec.PolicyReloaded(ok, hash) after each reload attempt.
	rec := metrics.New()
	rec.PolicyLoaded(p.Hash())
	tls, err := certs.New(certs.Options{
		CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile,
		ClientCAFile: cfg.ClientCAFile, AllowedClientNames: cfg.AllowedClientNames,
		Log: log, Observer: rec,
	})
	if err != nil {
		return err
	}
	// Built whether or not the policy pins, as a reload may turn it on.
	ro := cfg.Registry.DigestOptions()
	ro.Metrics, ro.Log = rec, log
	res, err := digest.New(ro)
	if err != nil {
		return err
	}
	srv := server.New(server.Options{
		Policy: &active, TLS: tls, Log: log, Metrics: rec,
		Resolver: res, PinTimeout: cfg.Registry.ReviewTimeout,
		Addr: cfg.Address(), MetricsAddr: cfg.MetricsListen, EnablePprof: cfg.EnablePprof,
		RequestTimeout: cfg.RequestTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
		ClientAuth: cfg.ClientCAFile != "", AllowedClientNames: cfg.AllowedClientNames,
	})
	if cfg.Policy.File != "" {
		log.Info("starting", "version", version.String(), "policyFile", cfg.Policy.File, "policy", p.Hash())
		return serveWithReload(ctx, srv, cfg.Policy, &active, rec, log)
	}
	log.Info("starting", "version", version.String(), "registryWhitelist", cfg.Policy.AllowedRegistries, "registryMirrors", cfg.Policy.RegistryMirrors,
		"rejectLatest", cfg.Policy.RejectLatest, "allowBreakGlass", cfg.Policy.AllowBreakGlass, "pinDigests", cfg.Policy.PinDigests, "mode", p.Mode(), "policy", p.Hash())
	return srv.ListenAndServe(ctx)
}

// pin resolves the one image of in, as the mutating webhook would under
// plan: the pinned reference, or why it could not be pinned; nothing when
// res is nil or the policy does not pin it.
func pin(res *digest.Resolver, p *policy.Policy, in policy.Input, plan policy.RewritePlan) (string, error) {
	if res == nil {
		return "", nil
	}
	pins := p.Pins(in, plan)
	if len(pins) == 0 {
		return "", nil
	}
	got := admission.PinEach(context.Background(), res, pins[:1])[0]
	return got.Pinned, got.Err
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	level, _ := config.ParseLogLevel(cfg.LogLevel) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (a *App) check(args []string) int {
	pc := config.DefaultPolicy()
	if err := pc.ApplyEnv(a.LookupEnv); err != nil {
		fmt.Fprintf(a.Stderr, "imagegate check: %v\n", err)
		return ExitUsage
	}
	fs := pflag.NewFlagSet("check", pflag.ContinueOnError)
	pc.AddFlags(fs)
	rc := config.DefaultRegistry()
	rc.AddFlags(fs)
	namespace := fs.String("namespace", "default", "namespace the pod would run in (with --config, it selects the namespace rule)")
	explain := fs.Bool("explain", false, "print, per image, its normalised form, the rule that judged it and what each check found")
	strict := fs.Bool("strict-config", false, "fail (exit 2) when the policy has lint warnings, e.g. to gate a policy change in CI")
	user := fs.String("user", "", "user asking, for break-glass restricted to allowedUsers (the validating webhook knows it; ImageReviews carry none)")
	groups := fs.StringSlice("group", nil, "groups of --user, comma-separated and repeatable, for break-glass restricted to allowedGroups")
	annotations := fs.StringToString("annotation", nil, "pod annotation key=value, repeatable (e.g. ops.image-policy.k8s.io/break-glass=true)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: imagegate check [flags] IMAGE...

Judge each image as 'imagegate serve' would with the same flags and policy
file, one line per image: outcome, image, then its normalised form or what is
wrong; with --explain, a block per image saying which rule judged it and what
each check found. With rewrite rules (--registry-mirror, or rewrites in the
policy file) the image is judged as the mutating webhook would rewrite it,
and the line says so; with --pin-digests (or pinDigests in the policy file)
the registry is asked which digest the tag names today, as the mutating
webhook would, and the line shows the pinned reference. Exit status: 0 all allowed, 1 any denied, 2 usage error or
an invalid policy (with --strict-config, also a policy with warnings).

Flags:
%s`, fs.FlagUsages())
	}
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(a.Stderr, "imagegate check: name at least one image")
		return ExitUsage
	}
	pc.MarkExplicit(fs, a.LookupEnv)
	p, warnings, err := pc.Compile()
	if err != nil {
		fmt.Fprintf(a.Stderr, "imagegate check: %v\n", err)
		return ExitUsage
	}
	for _, w := range warnings {
		fmt.Fprintf(a.Stderr, "imagegate check: warning: %s\n", w)
	}
	if *strict && len(warnings) > 0 {
		fmt.Fprintf(a.Stderr, "imagegate check: --strict-config: the policy has %d warning(s)\n", len(warnings))
		return ExitUsage
	}
	var res *digest.Resolver
	if p.HasPins() {
		if err := rc.Validate(); err != nil {
			fmt.Fprintf(a.Stderr, "imagegate check: %v\n", err)
			return ExitUsage
		}
		if res, err = digest.New(rc.DigestOptions()); err != nil {
			fmt.Fprintf(a.Stderr, "imagegate check: %v\n", err)
			return ExitUsage
		}
	}
	code := ExitOK
	for _, image := range fs.Args() {
		in := policy.Input{Namespace: *namespace, Annotations: *annotations, User: *user, Groups: *groups}
		if *explain {
			x := p.Explain(in, image)
			writeExplanation(a.Stdout, &x, p.Hash())
			if !x.Decision.Allowed {
				code = ExitDenied
			}
			continue
		}
		in.Images = []policy.Image{{Ref: image}}
		// Judge what the cluster would run: with rewrite rules, the
		// mutating webhook's rewrite of the image.
		plan, d := p.EvaluateMutated(in)
		pinned, pinErr := pin(res, p, in, plan)
		if pinned != "" { // what the cluster runs, allowed but for its digest
			d = p.Evaluate(policy.Input{Namespace: in.Namespace, Annotations: in.Annotations, User: in.User, Groups: in.Groups, Images: []policy.Image{{Ref: pinned}}})
		}
		detail := d.Reason()
		switch rw := plan.Results[0]; {
		case rw.Changed() && pinned != "":
			detail = "rewritten to " + rw.Rewritten + ", pinned to " + pinned
		case pinned != "":
			detail = "pinned to " + pinned
		case rw.Changed() && d.Allowed:
			detail = "rewritten to " + rw.Rewritten
		case rw.Changed():
			detail = "rewritten to " + rw.Rewritten + ": " + detail
		case detail == "":
			detail, _ = policy.Normalize(image) // allowed, so it parses
		}
		if pinErr != nil {
			detail += "; not pinned: " + pinErr.Error()
		}
		fmt.Fprintf(a.Stdout, "%s\t%q\t%s\n", d.Outcome, image, detail) // reasons quote images, so one line each
		if !d.Allowed {
			code = ExitDenied
		}
	}
	return code
}

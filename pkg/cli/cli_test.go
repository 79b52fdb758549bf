package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/spf13/pflag"
	"k8s.io/api/imagepolicy/v1alpha1"

	"github.com/imagegate/imagegate/pkg/cli"
	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/server"
	"github.com/imagegate/imagegate/pkg/server/servertest"
	"github.com/imagegate/imagegate/pkg/version"
)

// result is what one App.Run left behind.
type result struct {
	code           int
	stdout, stderr string
	// served is the config Serve was called with, nil if it was not called,
	// and policy the policy it was given.
	served *config.Config
	policy *policy.Policy
}

// run runs the command line args with the environment env. Serve is
// replaced by a func that records the final config and returns serveErr,
// so nothing listens: the TestFlagsAndConfigFile pattern of cert-manager.
func run(t *testing.T, env map[string]string, serveErr error, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	var r result
	app := &cli.App{
		Stdout:    &stdout,
		Stderr:    &stderr,
		LookupEnv: func(key string) (string, bool) { v, ok := env[key]; return v, ok },
		Serve: func(_ context.Context, cfg config.Config, p *policy.Policy, log *slog.Logger) error {
			r.served, r.policy = &cfg, p
			log.Info("serve called")
			return serveErr
		},
	}
	r.code = app.Run(t.Context(), args)
	r.stdout, r.stderr = stdout.String(), stderr.String()
	return r
}

// with returns Default() changed by edit.
func with(edit func(c *config.Config)) config.Config {
	c := config.Default()
	edit(&c)
	return c
}

func TestServeConfigPrecedenceIsDefaultThenEnvThenFlags(t *testing.T) {
	t.Parallel()
	bouncerEnv := map[string]string{
		"BOUNCER_CERTIFICATE":        "/env/tls.crt",
		"BOUNCER_KEY":                "/env/tls.key",
		"BOUNCER_PORT":               "1323",
		"BOUNCER_REGISTRY_WHITELIST": "registry.my.com, quay.io/prometheus",
	}
	tests := []struct {
		name string
		// env is the process environment.
		env map[string]string
		// args is the command line after the program name.
		args []string
		// want is the config Serve receives.
		want config.Config
		// wantAddress is want.Address().
		wantAddress string
	}{
		{
			name:        "TLS flags alone leave every other setting at its default",
			args:        []string{"serve", "--tls-cert-file=/f/tls.crt", "--tls-key-file=/f/tls.key"},
			want:        with(func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile = "/f/tls.crt", "/f/tls.key" }),
			wantAddress: ":8443",
		},
		{
			name: "kube-image-bouncer variables alone are enough to serve",
			env:  bouncerEnv,
			args: []string{"serve"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/env/tls.crt", "/env/tls.key", 1323
				c.Policy.AllowedRegistries = []string{"registry.my.com", "quay.io/prometheus"}
			}),
			wantAddress: ":1323",
		},
		{
			name: "flags beat the kube-image-bouncer variables",
			env:  bouncerEnv,
			args: []string{"serve", "--tls-cert-file=/f/tls.crt", "--tls-key-file=/f/tls.key", "--port=9443", "--registry-whitelist=flag.example.com"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/f/tls.crt", "/f/tls.key", 9443
				c.Policy.AllowedRegistries = []string{"flag.example.com"}
			}),
			wantAddress: ":9443",
		},
		{
			name: "long bouncer aliases set the same fields as the TLS flags",
			args: []string{"serve", "--cert", "/a/tls.crt", "--key", "/a/tls.key", "--port", "1323"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/a/tls.crt", "/a/tls.key", 1323
			}),
			wantAddress: ":1323",
		},
		{
			name: "short bouncer aliases beat the bouncer variables",
			env:  bouncerEnv,
			args: []string{"serve", "-c", "/a/tls.crt", "-k", "/a/tls.key", "-p", "2000"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/a/tls.crt", "/a/tls.key", 2000
				c.Policy.AllowedRegistries = []string{"registry.my.com", "quay.io/prometheus"}
			}),
			wantAddress: ":2000",
		},
		{
			name: "flags without a command run serve, as kube-image-bouncer did",
			args: []string{"--cert=/a/tls.crt", "--key=/a/tls.key", "--registry-whitelist=registry.my.com"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile = "/a/tls.crt", "/a/tls.key"
				c.Policy.AllowedRegistries = []string{"registry.my.com"}
			}),
			wantAddress: ":8443",
		},
		{
			name: "short flags without a command run serve",
			args: []string{"-c", "/a/tls.crt", "-k", "/a/tls.key", "-p", "1323"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/a/tls.crt", "/a/tls.key", 1323
			}),
			wantAddress: ":1323",
		},
		{
			name: "registry whitelist flag is comma-separated and repeatable",
			args: []string{"serve", "-c=/a/tls.crt", "-k=/a/tls.key", "--registry-whitelist=registry.my.com,quay.io/prometheus", "--registry-whitelist", "[::1]:5000"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile = "/a/tls.crt", "/a/tls.key"
				c.Policy.AllowedRegistries = []string{"registry.my.com", "quay.io/prometheus", "[::1]:5000"}
			}),
			wantAddress: ":8443",
		},
		{
			name: "port flag keeps the host of the default listen address",
			args: []string{"serve", "-c=/a/tls.crt", "-k=/a/tls.key", "-p=1323"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/a/tls.crt", "/a/tls.key", 1323
			}),
			wantAddress: ":1323",
		},
		{
			name: "port variable replaces the port of the default listen address",
			env:  map[string]string{"BOUNCER_PORT": "1323"},
			args: []string{"serve", "-c=/a/tls.crt", "-k=/a/tls.key"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/a/tls.crt", "/a/tls.key", 1323
			}),
			wantAddress: ":1323",
		},
		{
			name: "listen flag beats the port variable",
			env:  map[string]string{"BOUNCER_PORT": "1323"},
			args: []string{"serve", "-c=/a/tls.crt", "-k=/a/tls.key", "--listen=[::1]:8443"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Listen = "/a/tls.crt", "/a/tls.key", "[::1]:8443"
			}),
			wantAddress: "[::1]:8443",
		},
		{
			name: "every server and policy flag reaches Serve",
			args: []string{
				"serve", "-c=/a/tls.crt", "-k=/a/tls.key", "--listen=127.0.0.1:8443", "--client-ca-file=/ca.pem",
				"--allowed-client-names=kube-apiserver,apiserver.example.com", "--metrics-listen=127.0.0.1:9091",
				"--request-timeout=3s", "--shutdown-timeout=7s", "--log-level=debug", "--log-format=json",
				"--reject-latest=false", "--allow-break-glass=false", "--mode=warn",
			},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Listen, c.ClientCAFile = "/a/tls.crt", "/a/tls.key", "127.0.0.1:8443", "/ca.pem"
				c.AllowedClientNames, c.MetricsListen = []string{"kube-apiserver", "apiserver.example.com"}, "127.0.0.1:9091"
				c.RequestTimeout, c.ShutdownTimeout, c.LogLevel, c.LogFormat = 3*time.Second, 7*time.Second, "debug", "json"
				c.Policy.RejectLatest, c.Policy.AllowBreakGlass, c.Policy.Mode = false, false, "warn"
			}),
			wantAddress: "127.0.0.1:8443",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, tc.env, nil, tc.args...)
			if r.code != cli.ExitOK {
				t.Fatalf("Run(%q): got exit %d, want %d; stderr:\n%s", tc.args, r.code, cli.ExitOK, r.stderr)
			}
			if r.served == nil {
				t.Fatalf("Run(%q): Serve was not called", tc.args)
			}
			if !reflect.DeepEqual(*r.served, tc.want) {
				t.Errorf("Run(%q) with env %v served\n got %+v\nwant %+v", tc.args, tc.env, *r.served, tc.want)
			}
			if got := r.served.Address(); got != tc.wantAddress {
				t.Errorf("Run(%q) with env %v: got address %q, want %q", tc.args, tc.env, got, tc.wantAddress)
			}
		})
	}
}

func TestServeLogsInTheConfiguredFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		// wantPrefix starts the line Serve logged.
		wantPrefix string
	}{
		{name: "text by default", args: nil, wantPrefix: "time="},
		{name: "json on request", args: []string{"--log-format=json"}, wantPrefix: "{"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"serve", "-c=a", "-k=b"}, tc.args...)
			r := run(t, nil, nil, args...)
			if !strings.HasPrefix(r.stderr, tc.wantPrefix) || !strings.Contains(r.stderr, "serve called") {
				t.Errorf("Run(%q): got log %q, want a line starting with %q", args, r.stderr, tc.wantPrefix)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		// serveErr is what Serve returns.
		serveErr error
		// wantCode is the exit code.
		wantCode int
		// wantStdout and wantStderr are substrings of the output.
		wantStdout, wantStderr string
		// wantServed says whether Serve must have been called.
		wantServed bool
	}{
		{
			name:       "no arguments print usage and fail",
			wantCode:   cli.ExitUsage,
			wantStderr: "Usage:\n  imagegate serve [flags]",
		},
		{
			name:       "unknown command fails and names it",
			args:       []string{"frobnicate"},
			wantCode:   cli.ExitUsage,
			wantStderr: `unknown command "frobnicate"`,
		},
		{
			name:       "serve without TLS files fails with a clear message",
			args:       []string{"serve"},
			wantCode:   cli.ExitUsage,
			wantStderr: "--tls-cert-file and --tls-key-file are required",
		},
		{
			name:       "serve with a certificate but no key fails",
			args:       []string{"serve", "--cert=/a/tls.crt"},
			wantCode:   cli.ExitUsage,
			wantStderr: "--tls-cert-file and --tls-key-file are required",
		},
		{
			name:       "flags without a command and without TLS files fail as serve does",
			args:       []string{"--port=1323"},
			wantCode:   cli.ExitUsage,
			wantStderr: "--tls-cert-file and --tls-key-file are required",
		},
		{
			name:       "serve with a registry mirror that is not FROM=TO fails and names it",
			args:       []string{"serve", "-c=a", "-k=b", "--registry-mirror=docker.io"},
			wantCode:   cli.ExitUsage,
			wantStderr: `--registry-mirror: registry mirror "docker.io": want FROM=TO`,
		},
		{
			name:       "serve with an invalid registry mirror fails and names it",
			args:       []string{"serve", "-c=a", "-k=b", "--registry-mirror=docker.io=https://registry.my.com/hub"},
			wantCode:   cli.ExitUsage,
			wantStderr: `--registry-mirror: rewrite docker.io=https://registry.my.com/hub: TO: registry entry "https://registry.my.com/hub": drop the URL scheme`,
		},
		{
			name:       "check with an invalid registry mirror is a usage error",
			args:       []string{"check", "--registry-mirror=docker.io=mirror", "nginx:1"},
			wantCode:   cli.ExitUsage,
			wantStderr: `rewrite docker.io=mirror: TO "mirror": "mirror" is not read as a registry host`,
		},
		{
			name:       "listen and port together fail",
			args:       []string{"serve", "-c=a", "-k=b", "--listen=:8443", "--port=1323"},
			wantCode:   cli.ExitUsage,
			wantStderr: "use --listen or --port, not both",
		},
		{
			name:       "port variable that is not a number fails and names the variable",
			env:        map[string]string{"BOUNCER_PORT": "abc"},
			args:       []string{"serve", "-c=a", "-k=b"},
			wantCode:   cli.ExitUsage,
			wantStderr: `BOUNCER_PORT="abc": not a port number`,
		},
		{
			name:       "port out of range fails",
			args:       []string{"serve", "-c=a", "-k=b", "--port=70000"},
			wantCode:   cli.ExitUsage,
			wantStderr: "--port 70000: out of range",
		},
		{
			name:       "bad log level fails",
			args:       []string{"serve", "-c=a", "-k=b", "--log-level=loud"},
			wantCode:   cli.ExitUsage,
			wantStderr: `--log-level "loud"`,
		},
		{
			name:       "bad mode fails",
			args:       []string{"serve", "-c=a", "-k=b", "--mode=audit"},
			wantCode:   cli.ExitUsage,
			wantStderr: `unknown mode "audit"`,
		},
		{
			name:       "invalid whitelist entry fails before serving and names the entry",
			args:       []string{"serve", "-c=a", "-k=b", "--registry-whitelist=registry.my.com,https://quay.io"},
			wantCode:   cli.ExitUsage,
			wantStderr: `registry entry "https://quay.io"`,
		},
		{
			name:       "unknown flag fails",
			args:       []string{"serve", "--bogus"},
			wantCode:   cli.ExitUsage,
			wantStderr: "unknown flag: --bogus",
		},
		{
			name:       "serve with arguments fails",
			args:       []string{"serve", "-c=a", "-k=b", "extra"},
			wantCode:   cli.ExitUsage,
			wantStderr: `unexpected arguments ["extra"]`,
		},
		{
			name:       "serve that stops with an error exits 1",
			args:       []string{"serve", "-c=a", "-k=b"},
			serveErr:   errors.New("listen on :8443: address already in use"),
			wantCode:   cli.ExitDenied,
			wantStderr: "address already in use",
			wantServed: true,
		},
		{
			name:       "serve that stops cleanly exits 0",
			args:       []string{"serve", "-c=a", "-k=b"},
			wantCode:   cli.ExitOK,
			wantServed: true,
		},
		{
			name:       "version prints the version",
			args:       []string{"version"},
			wantCode:   cli.ExitOK,
			wantStdout: version.String() + "\n",
		},
		{
			name:       "help prints usage",
			args:       []string{"help"},
			wantCode:   cli.ExitOK,
			wantStdout: "imagegate check [flags] IMAGE...",
		},
		{
			name:       "--help prints usage",
			args:       []string{"--help"},
			wantCode:   cli.ExitOK,
			wantStdout: "imagegate version",
		},
		{
			name:       "check --help prints its flags",
			args:       []string{"check", "--help"},
			wantCode:   cli.ExitOK,
			wantStdout: "--annotation",
		},
		{
			name:       "check without images fails",
			args:       []string{"check", "--registry-whitelist=registry.my.com"},
			wantCode:   cli.ExitUsage,
			wantStderr: "name at least one image",
		},
		{
			name:       "check with an invalid whitelist entry fails and names the entry",
			args:       []string{"check", "--registry-whitelist=registry.my.com", "--registry-whitelist=quay.io/*", "registry.my.com/app:1"},
			wantCode:   cli.ExitUsage,
			wantStderr: `registry entry "quay.io/*"`,
		},
		{
			name:       "check with an invalid whitelist variable fails and names the entry",
			env:        map[string]string{"BOUNCER_REGISTRY_WHITELIST": "registry.my.com,https://quay.io"},
			args:       []string{"check", "registry.my.com/app:1"},
			wantCode:   cli.ExitUsage,
			wantStderr: `registry entry "https://quay.io"`,
		},
		{
			name:       "check with a bad mode fails",
			args:       []string{"check", "--mode=audit", "registry.my.com/app:1"},
			wantCode:   cli.ExitUsage,
			wantStderr: `unknown mode "audit"`,
		},
		{
			name:       "check with an annotation that is not key=value fails",
			args:       []string{"check", "--annotation=ops.image-policy.k8s.io/break-glass", "registry.my.com/app:1"},
			wantCode:   cli.ExitUsage,
			wantStderr: "must be formatted as key=value",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, tc.env, tc.serveErr, tc.args...)
			if r.code != tc.wantCode {
				t.Errorf("Run(%q): got exit %d, want %d; stderr:\n%s", tc.args, r.code, tc.wantCode, r.stderr)
			}
			if !strings.Contains(r.stdout, tc.wantStdout) {
				t.Errorf("Run(%q): got stdout %q, want it to contain %q", tc.args, r.stdout, tc.wantStdout)
			}
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("Run(%q): got stderr %q, want it to contain %q", tc.args, r.stderr, tc.wantStderr)
			}
			if got := r.served != nil; got != tc.wantServed {
				t.Errorf("Run(%q): got Serve called %v, want %v", tc.args, got, tc.wantServed)
			}
		})
	}
}

func TestServeHelpListsEveryFlag(t *testing.T) {
	t.Parallel()
	r := run(t, nil, nil, "serve", "--help")
	if r.code != cli.ExitOK {
		t.Fatalf("serve --help: got exit %d, want %d", r.code, cli.ExitOK)
	}
	if r.served != nil {
		t.Error("serve --help: Serve was called, want only help")
	}
	if n := strings.Count(r.stdout, "Usage: imagegate serve"); n != 1 || r.stderr != "" {
		t.Errorf("serve --help: got the usage %d times on standard output and %q on standard error, want once and nothing", n, r.stderr)
	}
	// The flags the issue names, so dropping one from AddServeFlags fails
	// here, plus every flag AddServeFlags registers.
	want := []string{
		"--listen", "-p, --port", "--tls-cert-file", "-c, --cert", "--tls-key-file", "-k, --key",
		"--client-ca-file", "--allowed-client-names", "--metrics-listen", "--log-level", "--log-format", "--registry-whitelist", "--reject-latest",
		"--allow-break-glass", "--mode", "--request-timeout", "--shutdown-timeout", "--registry-mirror", "--require-fully-qualified",
		"--pin-digests", "--registry-ca-file", "--registry-credentials", "--registry-timeout", "--registry-review-timeout", "--digest-cache-ttl",
	}
	cfg := config.Default()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	cfg.AddServeFlags(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Shorthand != "" {
			want = append(want, "-"+f.Shorthand+", --"+f.Name)
		}
		want = append(want, "--"+f.Name)
	})
	for _, flag := range want {
		if !strings.Contains(r.stdout, flag) {
			t.Errorf("serve --help: got no %q in\n%s", flag, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "(default \":8443\")") {
		t.Errorf("serve --help: got no default for --listen in\n%s", r.stdout)
	}
}

// checkLine is one line of `imagegate check` output.
type checkLine struct {
	// outcome is the first field.
	outcome policy.Outcome
	// image is the image as given; the line carries it quoted.
	image string
	// detail is a substring of the third field.
	detail string
}

func TestCheck(t *testing.T) {
	t.Parallel()
	const wl = "--registry-whitelist=registry.my.com,quay.io/prometheus"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		// wantCode is the exit code.
		wantCode int
		// wantLines are the output lines, in order.
		wantLines []checkLine
	}{
		{
			name:     "all allowed exits 0 and prints the normalised forms",
			args:     []string{"check", wl, "registry.my.com/app:1.0", "quay.io/prometheus/node-exporter:v1.7.0"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeAllowed, "registry.my.com/app:1.0", "registry.my.com/app:1.0"},
				{policy.OutcomeAllowed, "quay.io/prometheus/node-exporter:v1.7.0", "quay.io/prometheus/node-exporter:v1.7.0"},
			},
		},
		{
			name:     "a short Docker Hub name is printed in its normalised form",
			args:     []string{"check", "prometheus:2.6.1"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeAllowed, "prometheus:2.6.1", "docker.io/library/prometheus:2.6.1"},
			},
		},
		{
			name:     "any denied image exits 1 and says why",
			args:     []string{"check", wl, "registry.my.com/app:1.0", "prometheus:2.6.1", "registry.my.com/app"},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeAllowed, "registry.my.com/app:1.0", "registry.my.com/app:1.0"},
				{policy.OutcomeDenied, "prometheus:2.6.1", "registry docker.io is not allowed"},
				{policy.OutcomeDenied, "registry.my.com/app", "it has no tag"},
			},
		},
		{
			name:     "the whitelist variable applies to check",
			env:      map[string]string{"BOUNCER_REGISTRY_WHITELIST": "registry.my.com"},
			args:     []string{"check", "prometheus:2.6.1"},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeDenied, "prometheus:2.6.1", "registry docker.io is not allowed (allowed: registry.my.com)"},
			},
		},
		{
			name:     "the whitelist flag beats the variable",
			env:      map[string]string{"BOUNCER_REGISTRY_WHITELIST": "registry.my.com"},
			args:     []string{"check", "--registry-whitelist=docker.io/library", "prometheus:2.6.1"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeAllowed, "prometheus:2.6.1", "docker.io/library/prometheus:2.6.1"},
			},
		},
		{
			name:     "reject-latest can be turned off",
			args:     []string{"check", "--reject-latest=false", "registry.my.com/app"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeAllowed, "registry.my.com/app", "registry.my.com/app"},
			},
		},
		{
			name:     "a break-glass annotation allows and says what it overrode",
			args:     []string{"check", wl, "--annotation", "ops.image-policy.k8s.io/break-glass=true", "prometheus:2.6.1"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeBreakGlass, "prometheus:2.6.1", `break-glass overrode: image "prometheus:2.6.1": registry docker.io is not allowed`},
			},
		},
		{
			name:     "a break-glass ticket annotation names the ticket",
			args:     []string{"check", wl, "--annotation=mycluster.image-policy.k8s.io/ticket-1234=break-glass", "prometheus:2.6.1"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeBreakGlass, "prometheus:2.6.1", "break-glass (ticket ticket-1234) overrode"},
			},
		},
		{
			name: "repeated annotations are all applied",
			args: []string{
				"check", wl, "--annotation=ops.image-policy.k8s.io/break-glass=true",
				"--annotation=ops.image-policy.k8s.io/ticket=INC-1234", "registry.my.com/app:latest",
			},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeBreakGlass, "registry.my.com/app:latest", "break-glass (ticket INC-1234) overrode"},
			},
		},
		{
			name:     "break-glass is refused when disabled",
			args:     []string{"check", wl, "--allow-break-glass=false", "--annotation=ops.image-policy.k8s.io/break-glass=true", "prometheus:2.6.1"},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeDenied, "prometheus:2.6.1", "break-glass was requested but is disabled"},
			},
		},
		{
			name:     "a look-alike break-glass key does nothing",
			args:     []string{"check", wl, "--annotation=image-policy.k8s.io/break-glass=true", "prometheus:2.6.1"},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeDenied, "prometheus:2.6.1", "registry docker.io is not allowed"},
			},
		},
		{
			name:     "warn mode allows and reports the violations",
			args:     []string{"check", wl, "--mode", "warn", "prometheus:2.6.1", "registry.my.com/app:1"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeWarned, "prometheus:2.6.1", `warn mode, not enforced: image "prometheus:2.6.1": registry docker.io is not allowed`},
				{policy.OutcomeAllowed, "registry.my.com/app:1", "registry.my.com/app:1"},
			},
		},
		{
			name:     "an invalid reference is denied with the parser's error",
			args:     []string{"check", wl, "registry.my.com/App:1"},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeDenied, "registry.my.com/App:1", "must be lowercase"},
			},
		},
		{
			name:     "an empty image is denied, not a usage error",
			args:     []string{"check", wl, ""},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeDenied, "", "the reference is empty"},
			},
		},
		{
			name:     "an image that looks like a flag is judged after --",
			args:     []string{"check", wl, "--", "-p"},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeDenied, "-p", "not a valid image reference"},
			},
		},
		{
			name:     "a newline in an image stays on the image's line",
			args:     []string{"check", wl, "registry.my.com/app:1\n", "registry.my.com/app:2"},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeDenied, "registry.my.com/app:1\n", `image "registry.my.com/app:1\n": not a valid image reference`},
				{policy.OutcomeAllowed, "registry.my.com/app:2", "registry.my.com/app:2"},
			},
		},
		{
			name: "a registry mirror rewrites the image and the rewrite is judged",
			args: []string{
				"check", wl, "--registry-mirror=docker.io=registry.my.com/dockerhub", "--registry-mirror", "ghcr.io=mirror.example.com/ghcr",
				"prometheus:2.6.1", "nginx", "ghcr.io/acme/app:1", "quay.io/prometheus/prometheus:v2", "registry.my.com/dockerhub/library/nginx:1.25",
			},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeAllowed, "prometheus:2.6.1", "rewritten to registry.my.com/dockerhub/library/prometheus:2.6.1"},
				{policy.OutcomeDenied, "nginx", `rewritten to registry.my.com/dockerhub/library/nginx: image "registry.my.com/dockerhub/library/nginx": it has no tag`},
				{policy.OutcomeDenied, "ghcr.io/acme/app:1", `rewritten to mirror.example.com/ghcr/acme/app:1: image "mirror.example.com/ghcr/acme/app:1": registry mirror.example.com is not allowed`},
				{policy.OutcomeAllowed, "quay.io/prometheus/prometheus:v2", "quay.io/prometheus/prometheus:v2"},
				{policy.OutcomeAllowed, "registry.my.com/dockerhub/library/nginx:1.25", "registry.my.com/dockerhub/library/nginx:1.25"},
			},
		},
		{
			name:     "a short name under --require-fully-qualified is judged as the mutating webhook writes it",
			args:     []string{"check", "--require-fully-qualified", "nginx:1.25", "localhost:5000/app:1"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeAllowed, "nginx:1.25", "rewritten to docker.io/library/nginx:1.25"},
				{policy.OutcomeAllowed, "localhost:5000/app:1", "localhost:5000/app:1"},
			},
		},
		{
			name:     "a pod asking for break-glass is not rewritten",
			args:     []string{"check", wl, "--registry-mirror=docker.io=registry.my.com/dockerhub", "--annotation=ops.image-policy.k8s.io/break-glass=true", "prometheus:2.6.1"},
			wantCode: cli.ExitOK,
			wantLines: []checkLine{
				{policy.OutcomeBreakGlass, "prometheus:2.6.1", `break-glass overrode: image "prometheus:2.6.1"`},
			},
		},
		{
			name:     "a NUL and a tab in an image stay on the image's line",
			args:     []string{"check", wl, "registry.my.com/app:1\x00evil.io/x\tz"},
			wantCode: cli.ExitDenied,
			wantLines: []checkLine{
				{policy.OutcomeDenied, "registry.my.com/app:1\x00evil.io/x\tz", `image "registry.my.com/app:1\x00evil.io/x\tz": not a valid image reference`},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, tc.env, nil, tc.args...)
			if r.code != tc.wantCode {
				t.Errorf("Run(%q): got exit %d, want %d; stderr:\n%s", tc.args, r.code, tc.wantCode, r.stderr)
			}
			lines := splitLines(r.stdout)
			if len(lines) != len(tc.wantLines) {
				t.Fatalf("Run(%q): got %d lines, want %d:\n%s", tc.args, len(lines), len(tc.wantLines), r.stdout)
			}
			for i, want := range tc.wantLines {
				outcome, image, detail, err := parseCheckLine(lines[i])
				if err != nil {
					t.Errorf("Run(%q) line %d %q: %v", tc.args, i, lines[i], err)
					continue
				}
				if outcome != want.outcome || image != want.image || !strings.Contains(detail, want.detail) {
					t.Errorf("Run(%q) line %d:\n got %s %q %q\nwant %s %q containing %q", tc.args, i, outcome, image, detail, want.outcome, want.image, want.detail)
				}
			}
		})
	}
}

// splitLines splits output into lines, dropping the final newline.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// parseCheckLine splits `<outcome>\t<quoted image>\t<detail>` and unquotes
// the image. The detail must be printable: control characters in an image
// must not break the one-line-per-image format.
func parseCheckLine(line string) (outcome policy.Outcome, image, detail string, err error) {
	fields := strings.Split(line, "\t")
	if len(fields) != 3 {
		return "", "", "", errors.New("want 3 tab-separated fields")
	}
	image, err = strconv.Unquote(fields[1])
	if err != nil {
		return "", "", "", errors.New("second field is not a quoted string")
	}
	if strings.ContainsFunc(fields[2], unicode.IsControl) {
		return "", "", "", errors.New("third field holds a control character")
	}
	return policy.Outcome(fields[0]), image, fields[2], nil
}

// corpus is pkg/policy/testdata/corpus.json; see the README beside it.
type corpus struct {
	Policy struct {
		AllowedRegistries []string `json:"registryWhitelist"`
		RejectLatest      bool     `json:"rejectLatest"`
		AllowBreakGlass   bool     `json:"allowBreakGlass"`
	} `json:"policy"`
	Cases []struct {
		Name        string            `json:"name"`
		Image       string            `json:"image"`
		Annotations map[string]string `json:"annotations"`
		Want        string            `json:"want"`
	} `json:"cases"`
}

func loadCorpus(t *testing.T) corpus {
	t.Helper()
	raw, err := os.ReadFile("../policy/testdata/corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c corpus
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("decode corpus: %v", err)
	}
	if len(c.Cases) == 0 {
		t.Fatal("corpus has no cases")
	}
	return c
}

// imageReviewResponse is the part of the handler's reply the test reads.
type imageReviewResponse struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Status     struct {
		Allowed          bool              `json:"allowed"`
		Reason           string            `json:"reason"`
		AuditAnnotations map[string]string `json:"auditAnnotations"`
	} `json:"status"`
}

// postImageReview sends one ImageReview for image to h.
func postImageReview(t *testing.T, h http.Handler, image string, annotations map[string]string) imageReviewResponse {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"apiVersion": "imagepolicy.k8s.io/v1alpha1",
		"kind":       "ImageReview",
		"spec": v1alpha1.ImageReviewSpec{
			Containers:  []v1alpha1.ImageReviewContainerSpec{{Image: image}},
			Annotations: annotations,
			Namespace:   "default",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, server.PathImagePolicy, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("POST %s for %q: got status %d, want 200; body: %s", server.PathImagePolicy, image, rec.Code, rec.Body)
	}
	var resp imageReviewResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("POST %s for %q: decode reply: %v", server.PathImagePolicy, image, err)
	}
	return resp
}

// TestCheckAgreesWithServerOnCorpus is the agreement the issue demands:
// every hostile corpus case judged by `imagegate check` and by the real
// ImageReview handler, both configured through App.Run with the same flags,
// gives the same verdict, the corpus's verdict, and the same reason.
func TestCheckAgreesWithServerOnCorpus(t *testing.T) {
	t.Parallel()
	c := loadCorpus(t)
	policyFlags := []string{
		"--reject-latest=" + strconv.FormatBool(c.Policy.RejectLatest),
		"--allow-break-glass=" + strconv.FormatBool(c.Policy.AllowBreakGlass),
	}
	for _, entry := range c.Policy.AllowedRegistries {
		policyFlags = append(policyFlags, "--registry-whitelist="+entry)
	}

	// The server: its config comes out of `imagegate serve` with the same
	// policy flags; only the listener is left out.
	r := run(t, nil, nil, append([]string{"serve", "--tls-cert-file=tls.crt", "--tls-key-file=tls.key"}, policyFlags...)...)
	if r.code != cli.ExitOK || r.served == nil {
		t.Fatalf("serve with the corpus policy: got exit %d, want 0 and a config; stderr:\n%s", r.code, r.stderr)
	}
	if got := r.served.Policy.AllowedRegistries; !slices.Equal(got, c.Policy.AllowedRegistries) {
		t.Fatalf("serve whitelist: got %q, want the corpus's %q", got, c.Policy.AllowedRegistries)
	}
	var active atomic.Pointer[policy.Policy]
	active.Store(r.policy)
	handler := server.New(server.Options{Policy: &active}).Handler()

	for _, tc := range c.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			wantAllowed := tc.Want == "allow"

			// The server's verdict.
			resp := postImageReview(t, handler, tc.Image, tc.Annotations)
			if resp.APIVersion != "imagepolicy.k8s.io/v1alpha1" || resp.Kind != "ImageReview" {
				t.Errorf("server reply: got apiVersion %q kind %q, want imagepolicy.k8s.io/v1alpha1 ImageReview", resp.APIVersion, resp.Kind)
			}
			if resp.Status.Allowed != wantAllowed {
				t.Errorf("server: got allowed %v for %q, want %v (%s); reason: %s", resp.Status.Allowed, tc.Image, wantAllowed, tc.Want, resp.Status.Reason)
			}

			// check's verdict, with the image passed through argv unchanged.
			args := append([]string{"check"}, policyFlags...)
			keys := make([]string, 0, len(tc.Annotations))
			for k := range tc.Annotations {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				args = append(args, "--annotation", k+"="+tc.Annotations[k])
			}
			args = append(args, "--", tc.Image)
			cr := run(t, nil, nil, args...)
			wantCode := cli.ExitDenied
			if wantAllowed {
				wantCode = cli.ExitOK
			}
			if cr.code != wantCode {
				t.Errorf("check %q: got exit %d, want %d (%s); stderr:\n%s", tc.Image, cr.code, wantCode, tc.Want, cr.stderr)
			}
			lines := splitLines(cr.stdout)
			if len(lines) != 1 {
				t.Fatalf("check %q: got %d lines, want 1:\n%s", tc.Image, len(lines), cr.stdout)
			}
			outcome, image, detail, err := parseCheckLine(lines[0])
			if err != nil {
				t.Fatalf("check %q: line %q: %v", tc.Image, lines[0], err)
			}
			if image != tc.Image {
				t.Errorf("check: got image %q back, want %q unchanged", image, tc.Image)
			}
			checkAllowed := outcome == policy.OutcomeAllowed || outcome == policy.OutcomeBreakGlass
			if checkAllowed != resp.Status.Allowed {
				t.Errorf("check %q says %s, server says allowed %v: they disagree", tc.Image, outcome, resp.Status.Allowed)
			}
			if got, want := resp.Status.AuditAnnotations[policy.AuditBreakGlass] == "true", outcome == policy.OutcomeBreakGlass; got != want {
				t.Errorf("%q: server audits break-glass %v, check outcome %s: they disagree", tc.Image, got, outcome)
			}

			// The same words: the server's reason, or for a clean allow the
			// normalised form.
			wantDetail := resp.Status.Reason
			if resp.Status.Reason == "" {
				wantDetail, err = policy.Normalize(tc.Image)
				if err != nil {
					t.Fatalf("server allowed %q without a reason, but it does not parse: %v", tc.Image, err)
				}
			}
			if detail != wantDetail {
				t.Errorf("check %q detail:\n got %q\nwant %q (the server's)", tc.Image, detail, wantDetail)
			}
		})
	}
}

// serve fails clearly, before it listens, when its TLS files do not load.
func TestRunServerFailsClearlyOnBadTLSFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, certFile, keyFile := servertest.ServingPair(t, dir)
	notPEM := dir + "/garbage.pem"
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := policy.New(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(*config.Config)
		wantErr string
	}{
		{name: "missing certificate", edit: func(c *config.Config) { c.TLSCertFile = dir + "/nope.crt" }, wantErr: "load serving certificate"},
		{name: "key does not match", edit: func(c *config.Config) { c.TLSKeyFile = notPEM }, wantErr: "garbage.pem"},
		{name: "missing client CA", edit: func(c *config.Config) { c.ClientCAFile = dir + "/nope-ca.crt" }, wantErr: "load client CA"},
		{name: "client CA without PEM", edit: func(c *config.Config) { c.ClientCAFile = notPEM }, wantErr: "no PEM certificate found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Listen, c.MetricsListen = certFile, keyFile, "127.0.0.1:0", ""
			})
			tc.edit(&cfg)
			ctx, cancel := context.WithCancel(t.Context())
			cancel() // were the files to load, serve nothing
			err := cli.RunServer(ctx, cfg, p, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// check --explain says why a break-glass request did not apply, even when
// the image needed no override.
func TestExplainSaysWhyBreakGlassDidNotApply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		// want is the verdict line.
		want string
	}{
		{
			name: "disabled, nothing to override",
			args: []string{"--allow-break-glass=false", "registry.my.com/app:1"},
			want: "  verdict:            allowed (break-glass was requested but is disabled on this server)",
		},
		{
			name: "disabled, a denial",
			args: []string{"--allow-break-glass=false", "--registry-whitelist=quay.io", "registry.my.com/app:1"},
			want: "  verdict:            denied (break-glass was requested but is disabled on this server)",
		},
		{
			name: "honoured",
			args: []string{"--registry-whitelist=quay.io", "registry.my.com/app:1"},
			want: `  verdict:            break-glass: break-glass overrode: image "registry.my.com/app:1": registry registry.my.com is not allowed (allowed: quay.io); push or mirror the image to an allowed registry and use that reference`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, nil, nil, append([]string{"check", "--explain", "--annotation=ops.image-policy.k8s.io/break-glass=true"}, tc.args...)...)
			if lines := splitLines(r.stdout); len(lines) == 0 || lines[len(lines)-1] != tc.want {
				t.Errorf("got output\n%s\nstderr %s\nwant the last line %q", r.stdout, r.stderr, tc.want)
			}
		})
	}
}

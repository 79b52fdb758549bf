package config_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/policy"
)

// envFunc turns a map into a lookup, so tests never read the process's
// environment and can run in parallel.
func envFunc(env map[string]string) func(string) (string, bool) {
	return func(key string) (string, bool) { v, ok := env[key]; return v, ok }
}

// load builds a Config the way `imagegate serve` does: defaults, then the
// environment, then flags registered with the resulting values as defaults.
func load(t *testing.T, env map[string]string, args []string) config.Config {
	t.Helper()
	c := config.Default()
	if err := c.ApplyEnv(envFunc(env)); err != nil {
		t.Fatalf("ApplyEnv(%v): got error %v, want nil", env, err)
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	c.AddServeFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("Parse(%q): got error %v, want nil", args, err)
	}
	return c
}

// with returns Default() changed by edit.
func with(edit func(c *config.Config)) config.Config {
	c := config.Default()
	edit(&c)
	return c
}

func TestDefaultIsSafe(t *testing.T) {
	t.Parallel()
	c := config.Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, ":8443"},
		{"metrics listen", c.MetricsListen, ":9090"},
		{"client CA", c.ClientCAFile, ""},
		{"allowed client names", len(c.AllowedClientNames), 0},
		{"port", c.Port, 0},
		{"request timeout", c.RequestTimeout, 10 * time.Second},
		{"log level", c.LogLevel, "info"},
		{"log format", c.LogFormat, "text"},
		{"reject latest", c.Policy.RejectLatest, true},
		{"allow break-glass", c.Policy.AllowBreakGlass, true},
		{"mode", c.Policy.Mode, "enforce"},
		{"registry whitelist", len(c.Policy.AllowedRegistries), 0},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("Default() %s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if got := config.DefaultPolicy(); !reflect.DeepEqual(got, c.Policy) {
		t.Errorf("DefaultPolicy(): got %+v, want Default().Policy %+v", got, c.Policy)
	}
}

func TestPrecedenceIsDefaultThenEnvThenFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// env is the process environment.
		env map[string]string
		// args are the serve flags.
		args []string
		// want is the resulting config.
		want config.Config
	}{
		{
			name: "nothing set gives the defaults",
			want: config.Default(),
		},
		{
			name: "kube-image-bouncer variables set certificate, key, port and whitelist",
			env: map[string]string{
				"BOUNCER_CERTIFICATE":        "/env/tls.crt",
				"BOUNCER_KEY":                "/env/tls.key",
				"BOUNCER_PORT":               "1323",
				"BOUNCER_REGISTRY_WHITELIST": "registry.my.com, quay.io/prometheus",
			},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/env/tls.crt", "/env/tls.key", 1323
				c.Policy.AllowedRegistries = []string{"registry.my.com", "quay.io/prometheus"}
			}),
		},
		{
			// An empty whitelist is refused: TestAnEmptyRegistryWhitelistFailsClosed.
			name: "other empty variables are ignored",
			env:  map[string]string{"BOUNCER_CERTIFICATE": "", "BOUNCER_KEY": "", "BOUNCER_PORT": ""},
			want: config.Default(),
		},
		{
			name: "flags beat every variable",
			env: map[string]string{
				"BOUNCER_CERTIFICATE":        "/env/tls.crt",
				"BOUNCER_KEY":                "/env/tls.key",
				"BOUNCER_PORT":               "1323",
				"BOUNCER_REGISTRY_WHITELIST": "env.example.com",
			},
			args: []string{"--tls-cert-file=/flag/tls.crt", "--tls-key-file=/flag/tls.key", "--port=9443", "--registry-whitelist=flag.example.com"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile, c.Port = "/flag/tls.crt", "/flag/tls.key", 9443
				c.Policy.AllowedRegistries = []string{"flag.example.com"}
			}),
		},
		{
			name: "a flag beats only its own variable",
			env: map[string]string{
				"BOUNCER_CERTIFICATE":        "/env/tls.crt",
				"BOUNCER_KEY":                "/env/tls.key",
				"BOUNCER_REGISTRY_WHITELIST": "env.example.com",
			},
			args: []string{"--tls-key-file", "/flag/tls.key"},
			want: with(func(c *config.Config) {
				c.TLSCertFile, c.TLSKeyFile = "/env/tls.crt", "/flag/tls.key"
				c.Policy.AllowedRegistries = []string{"env.example.com"}
			}),
		},
		{
			name: "long bouncer aliases set the TLS files and the port",
			args: []string{"--cert", "/a/tls.crt", "--key", "/a/tls.key", "--port", "1323"},
			want: with(func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile, c.Port = "/a/tls.crt", "/a/tls.key", 1323 }),
		},
		{
			name: "short bouncer aliases set the TLS files and the port",
			args: []string{"-c", "/a/tls.crt", "-k", "/a/tls.key", "-p", "1323"},
			want: with(func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile, c.Port = "/a/tls.crt", "/a/tls.key", 1323 }),
		},
		{
			name: "aliases beat the bouncer variables",
			env:  map[string]string{"BOUNCER_CERTIFICATE": "/env/tls.crt", "BOUNCER_KEY": "/env/tls.key", "BOUNCER_PORT": "1323"},
			args: []string{"-c=/a/tls.crt", "-k=/a/tls.key", "-p=2000"},
			want: with(func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile, c.Port = "/a/tls.crt", "/a/tls.key", 2000 }),
		},
		{
			name: "the last of an alias and its flag wins",
			args: []string{"--tls-cert-file=/first.crt", "--cert=/second.crt", "--key=/first.key", "--tls-key-file=/second.key"},
			want: with(func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile = "/second.crt", "/second.key" }),
		},
		{
			name: "registry whitelist is comma-separated and repeatable",
			args: []string{"--registry-whitelist=registry.my.com,quay.io/prometheus", "--registry-whitelist", "[::1]:5000"},
			want: with(func(c *config.Config) {
				c.Policy.AllowedRegistries = []string{"registry.my.com", "quay.io/prometheus", "[::1]:5000"}
			}),
		},
		{
			name: "a repeated whitelist flag replaces the variable instead of adding to it",
			env:  map[string]string{"BOUNCER_REGISTRY_WHITELIST": "env.example.com"},
			args: []string{"--registry-whitelist=a.example.com", "--registry-whitelist=b.example.com"},
			want: with(func(c *config.Config) { c.Policy.AllowedRegistries = []string{"a.example.com", "b.example.com"} }),
		},
		{
			name: "every other server and policy flag sets its field",
			args: []string{
				"--listen=127.0.0.1:8443", "--client-ca-file=/ca.pem", "--request-timeout=3s", "--shutdown-timeout=7s",
				"--log-level=debug", "--log-format=json", "--reject-latest=false", "--allow-break-glass=false", "--mode=warn",
			},
			want: with(func(c *config.Config) {
				c.Listen, c.ClientCAFile, c.RequestTimeout, c.ShutdownTimeout = "127.0.0.1:8443", "/ca.pem", 3*time.Second, 7*time.Second
				c.LogLevel, c.LogFormat = "debug", "json"
				c.Policy.RejectLatest, c.Policy.AllowBreakGlass, c.Policy.Mode = false, false, "warn"
			}),
		},
		{
			name: "the digest pinning flags set the policy and the registry client",
			args: []string{"--pin-digests", "--registry-ca-file=/reg-ca.pem", "--registry-credentials=/docker/config.json",
				"--registry-timeout=1s", "--registry-review-timeout=2s", "--digest-cache-ttl=1m"},
			want: with(func(c *config.Config) {
				c.Policy.PinDigests = true
				c.Registry = config.RegistryConfig{CAFile: "/reg-ca.pem", CredentialsFile: "/docker/config.json",
					Timeout: time.Second, ReviewTimeout: 2 * time.Second, CacheTTL: time.Minute}
			}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := load(t, tc.env, tc.args); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("env %v, flags %q:\n got %+v\nwant %+v", tc.env, tc.args, got, tc.want)
			}
		})
	}
}

func TestFlagDefaultsShowTheEnvironment(t *testing.T) {
	t.Parallel()
	c := config.Default()
	env := map[string]string{"BOUNCER_CERTIFICATE": "/env/tls.crt", "BOUNCER_PORT": "1323", "BOUNCER_REGISTRY_WHITELIST": "registry.my.com"}
	if err := c.ApplyEnv(envFunc(env)); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	c.AddServeFlags(fs)
	tests := []struct {
		flag string
		want string
	}{
		{"tls-cert-file", "/env/tls.crt"},
		{"cert", "/env/tls.crt"},
		{"port", "1323"},
		{"registry-whitelist", "[registry.my.com]"},
		{"listen", ":8443"},
		{"reject-latest", "true"},
	}
	for _, tc := range tests {
		if got := fs.Lookup(tc.flag).DefValue; got != tc.want {
			t.Errorf("--%s default: got %q, want %q", tc.flag, got, tc.want)
		}
	}
}

func TestApplyEnvRejectsAPortThatIsNotANumber(t *testing.T) {
	t.Parallel()
	for _, port := range []string{"abc", "80a", " 8443", "8443.0"} {
		t.Run(port, func(t *testing.T) {
			t.Parallel()
			c := config.Default()
			err := c.ApplyEnv(envFunc(map[string]string{"BOUNCER_PORT": port}))
			if err == nil {
				t.Fatalf("ApplyEnv(BOUNCER_PORT=%q): got nil error, want one naming the variable", port)
			}
			if got, want := err.Error(), `BOUNCER_PORT="`+port+`"`; !strings.Contains(got, want) {
				t.Errorf("ApplyEnv(BOUNCER_PORT=%q): got error %q, want it to contain %q", port, got, want)
			}
		})
	}
}

func TestAddressAppliesPortToListen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// listen and port are Config.Listen and Config.Port.
		listen string
		port   int
		// want is Address().
		want string
	}{
		{name: "no port keeps listen as it is", listen: ":8443", want: ":8443"},
		{name: "no port keeps an IPv6 listen as it is", listen: "[::1]:8443", want: "[::1]:8443"},
		{name: "port replaces the port of an empty host", listen: ":8443", port: 1323, want: ":1323"},
		{name: "port keeps an IPv4 host", listen: "127.0.0.1:8443", port: 1323, want: "127.0.0.1:1323"},
		{name: "port keeps a host name", listen: "localhost:8443", port: 1323, want: "localhost:1323"},
		{name: "port keeps an IPv6 host in brackets", listen: "[::1]:8443", port: 1323, want: "[::1]:1323"},
		{name: "port keeps the IPv6 unspecified host", listen: "[::]:8443", port: 1323, want: "[::]:1323"},
		{name: "port with an empty listen listens on every address", listen: "", port: 1323, want: ":1323"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := with(func(c *config.Config) { c.Listen, c.Port = tc.listen, tc.port })
			if got := c.Address(); got != tc.want {
				t.Errorf("Config{Listen: %q, Port: %d}.Address(): got %q, want %q", tc.listen, tc.port, got, tc.want)
			}
		})
	}
}

func TestAddressFromFlagsAndEnvironment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "default listen", want: ":8443"},
		{name: "short port flag", args: []string{"-p", "1323"}, want: ":1323"},
		{name: "port flag on an IPv4 listen", args: []string{"--listen=127.0.0.1:8443", "--port=1323"}, want: "127.0.0.1:1323"},
		{name: "port flag on an IPv6 listen", args: []string{"--listen=[::1]:8443", "--port=1323"}, want: "[::1]:1323"},
		{name: "port variable", env: map[string]string{"BOUNCER_PORT": "1323"}, want: ":1323"},
		{name: "port flag beats port variable", env: map[string]string{"BOUNCER_PORT": "1323"}, args: []string{"-p=2000"}, want: ":2000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := load(t, tc.env, tc.args)
			if got := c.Address(); got != tc.want {
				t.Errorf("env %v, flags %q: Address() got %q, want %q", tc.env, tc.args, got, tc.want)
			}
		})
	}
}

func TestOptionsTrimsTheWhitelistAndCarriesThePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// args are policy flags.
		args []string
		// env is the process environment.
		env  map[string]string
		want policy.Options
	}{
		{
			name: "defaults enforce, reject latest, allow break-glass, no whitelist",
			want: policy.Options{RejectLatest: true, AllowBreakGlass: true, Mode: policy.ModeEnforce},
		},
		{
			name: "blanks around entries and empty entries are dropped",
			args: []string{"--registry-whitelist= registry.my.com ,, quay.io/prometheus", "--registry-whitelist=,[::1]:5000 ,"},
			want: policy.Options{
				AllowedRegistries: []string{"registry.my.com", "quay.io/prometheus", "[::1]:5000"},
				RejectLatest:      true, AllowBreakGlass: true, Mode: policy.ModeEnforce,
			},
		},
		{
			name: "the whitelist variable is trimmed the same way",
			env:  map[string]string{"BOUNCER_REGISTRY_WHITELIST": " registry.my.com,, quay.io/prometheus "},
			want: policy.Options{
				AllowedRegistries: []string{"registry.my.com", "quay.io/prometheus"},
				RejectLatest:      true, AllowBreakGlass: true, Mode: policy.ModeEnforce,
			},
		},
		{
			name: "switches and mode are carried over",
			args: []string{"--reject-latest=false", "--allow-break-glass=false", "--mode=warn"},
			want: policy.Options{Mode: policy.ModeWarn},
		},
		{
			name: "mode is case-insensitive",
			args: []string{"--mode=WARN"},
			want: policy.Options{RejectLatest: true, AllowBreakGlass: true, Mode: policy.ModeWarn},
		},
		{
			name: "fully qualified references are required when asked",
			args: []string{"--require-fully-qualified"},
			want: policy.Options{RejectLatest: true, AllowBreakGlass: true, Mode: policy.ModeEnforce, RequireFullyQualified: true},
		},
		{
			name: "digests are pinned when asked",
			args: []string{"--pin-digests"},
			want: policy.Options{RejectLatest: true, AllowBreakGlass: true, Mode: policy.ModeEnforce, PinDigests: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := config.DefaultPolicy()
			if err := p.ApplyEnv(envFunc(tc.env)); err != nil {
				t.Fatal(err)
			}
			fs := pflag.NewFlagSet("check", pflag.ContinueOnError)
			p.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			got, err := p.Options()
			if err != nil {
				t.Fatalf("Options(): got error %v, want nil", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("flags %q: Options() got %+v, want %+v", tc.args, got, tc.want)
			}
		})
	}
}

func TestValidateAcceptsDefaultsWithTLSFiles(t *testing.T) {
	t.Parallel()
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() of defaults with TLS files: got %v, want nil", err)
	}
}

// validConfig is Default() with the TLS files set: the smallest valid config.
func validConfig() config.Config {
	return with(func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile = "tls.crt", "tls.key" })
}

func TestValidateNamesEachBrokenSetting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// edit breaks one setting of a valid config.
		edit func(c *config.Config)
		// want is a substring of the error.
		want string
	}{
		{
			name: "missing certificate file",
			edit: func(c *config.Config) { c.TLSCertFile = "" },
			want: "--tls-cert-file and --tls-key-file are required",
		},
		{
			name: "missing key file",
			edit: func(c *config.Config) { c.TLSKeyFile = "" },
			want: "--tls-cert-file and --tls-key-file are required",
		},
		{
			name: "negative port",
			edit: func(c *config.Config) { c.Port = -1 },
			want: "--port -1: out of range",
		},
		{
			name: "port above 65535",
			edit: func(c *config.Config) { c.Port = 65536 },
			want: "--port 65536: out of range",
		},
		{
			name: "unknown log level",
			edit: func(c *config.Config) { c.LogLevel = "verbose" },
			want: `--log-level "verbose": want debug, info, warn or error`,
		},
		{
			name: "empty log level",
			edit: func(c *config.Config) { c.LogLevel = "" },
			want: `--log-level "": want debug, info, warn or error`,
		},
		{
			name: "unknown log format",
			edit: func(c *config.Config) { c.LogFormat = "yaml" },
			want: `--log-format "yaml": want text or json`,
		},
		{
			name: "unknown mode",
			edit: func(c *config.Config) { c.Policy.Mode = "audit" },
			want: `--mode: unknown mode "audit": want "enforce" or "warn"`,
		},
		{
			name: "pprof without a metrics listener",
			edit: func(c *config.Config) { c.EnablePprof, c.MetricsListen = true, "" },
			want: "--enable-pprof needs --metrics-listen",
		},
		{
			name: "zero request timeout",
			edit: func(c *config.Config) { c.RequestTimeout = 0 },
			want: "--request-timeout 0s: must be positive",
		},
		{
			name: "negative request timeout",
			edit: func(c *config.Config) { c.RequestTimeout = -time.Second },
			want: "--request-timeout -1s: must be positive",
		},
		{
			name: "zero registry timeout",
			edit: func(c *config.Config) { c.Registry.Timeout = 0 },
			want: "--registry-timeout 0s: must be positive",
		},
		{
			name: "negative digest cache TTL",
			edit: func(c *config.Config) { c.Registry.CacheTTL = -time.Minute },
			want: "--digest-cache-ttl -1m0s: must be positive",
		},
		{
			name: "negative shutdown timeout",
			edit: func(c *config.Config) { c.ShutdownTimeout = -time.Second },
			want: "--shutdown-timeout -1s: must not be negative",
		},
		{
			name: "whitelist entry with a URL scheme",
			edit: func(c *config.Config) { c.Policy.AllowedRegistries = []string{"registry.my.com", "https://quay.io"} },
			want: `registry entry "https://quay.io": drop the URL scheme`,
		},
		{
			name: "allowed client names without a client CA",
			edit: func(c *config.Config) { c.AllowedClientNames = []string{"kube-apiserver"} },
			want: "--allowed-client-names needs --client-ca-file",
		},
		{
			name: "metrics address without a port",
			edit: func(c *config.Config) { c.MetricsListen = "localhost" },
			want: `--metrics-listen "localhost": want host:port`,
		},
		{
			name: "whitelist entry with a wildcard",
			edit: func(c *config.Config) { c.Policy.AllowedRegistries = []string{"*.my.com"} },
			want: `registry entry "*.my.com"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tc.edit(&c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate(): got nil, want an error containing %q", tc.want)
			}
			if got := err.Error(); !strings.Contains(got, tc.want) {
				t.Errorf("Validate(): got %q, want it to contain %q", got, tc.want)
			}
		})
	}
}

func TestValidateReportsEveryBrokenSettingAtOnce(t *testing.T) {
	t.Parallel()
	c := with(func(c *config.Config) { c.LogFormat, c.Policy.Mode = "yaml", "audit" })
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate(): got nil, want three errors")
	}
	for _, want := range []string{"--tls-cert-file", "--log-format", "--mode"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(): got %q, want it to mention %s", err, want)
		}
	}
}

// A whitelist given without an entry, such as an unset templating
// variable, would turn the registry check off: serve refuses to start, with
// or without a policy file, and leaving the setting out still allows every
// registry.
func TestAnEmptyRegistryWhitelistFailsClosed(t *testing.T) {
	t.Parallel()
	const (
		flagErr = "--registry-whitelist is empty: that would allow images from every registry; list the allowed registries, or leave the flag out (and allowedRegistries out of the policy file) to allow every registry deliberately"
		envErr  = "BOUNCER_REGISTRY_WHITELIST is set but empty: that would allow images from every registry; list the allowed registries in it, or unset it (and leave allowedRegistries out of the policy file) to allow every registry deliberately"
	)
	tests := []struct {
		name string
		// env is the process environment, read with os.LookupEnv's
		// semantics; args the serve flags after the TLS files.
		env  map[string]string
		args []string
		// wantErr is the error, "" for none.
		wantErr string
	}{
		{name: "an empty flag", args: []string{"--registry-whitelist="}, wantErr: flagErr},
		{name: "a flag of separators and blanks", args: []string{"--registry-whitelist= , ,"}, wantErr: flagErr},
		{name: "an empty flag given twice", args: []string{"--registry-whitelist=", "--registry-whitelist=,"}, wantErr: flagErr},
		{name: "an empty flag with a policy file", args: []string{"--config=policy.yaml", "--registry-whitelist="}, wantErr: flagErr},
		{name: "an empty flag beats a variable with entries", env: map[string]string{"BOUNCER_REGISTRY_WHITELIST": "registry.my.com"}, args: []string{"--registry-whitelist="}, wantErr: flagErr},
		{name: "a variable set but empty", env: map[string]string{"BOUNCER_REGISTRY_WHITELIST": ""}, wantErr: envErr},
		{name: "a variable of separators and blanks", env: map[string]string{"BOUNCER_REGISTRY_WHITELIST": " , "}, wantErr: envErr},
		{name: "a variable set but empty with a policy file", env: map[string]string{"BOUNCER_REGISTRY_WHITELIST": ""}, args: []string{"--config=policy.yaml"}, wantErr: envErr},
		{name: "a flag with entries beats an empty variable", env: map[string]string{"BOUNCER_REGISTRY_WHITELIST": ""}, args: []string{"--registry-whitelist=registry.my.com"}},
		{name: "an empty flag beside one with an entry", args: []string{"--registry-whitelist=", "--registry-whitelist=registry.my.com"}},
		{name: "leaving the flag and the variable out allows every registry", args: nil},
		{name: "leaving them out with a policy file", args: []string{"--config=policy.yaml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := config.Default()
			if err := c.ApplyEnv(envFunc(tc.env)); err != nil {
				t.Fatal(err)
			}
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			c.AddServeFlags(fs)
			if err := fs.Parse(append([]string{"--tls-cert-file=tls.crt", "--tls-key-file=tls.key"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			c.Policy.MarkExplicit(fs, envFunc(tc.env))
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate(): got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate(): got %v, want an error containing %q", err, tc.wantErr)
			}
			// check and audit compile the policy without Validate: they
			// refuse it too, before reading any file.
			if _, _, err = c.Policy.Compile(); err == nil || err.Error() != tc.wantErr {
				t.Errorf("compiling the policy: got %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// Compile is the one way to a policy: the flags are checked as flags with
// or without a file, and each error says which setting or which line.
func TestCompileNamesWhatIsWrong(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return "--config=" + path
	}
	good := file("good.yaml", "default:\n  allowedRegistries: [registry.my.com]\n")
	tests := []struct {
		name string
		// args are policy flags.
		args []string
		// wantErr starts the error, "" for none.
		wantErr string
		// image is judged by the compiled policy, and wantAllowed is its verdict.
		image       string
		wantAllowed bool
	}{
		{name: "the flags alone", args: []string{"--registry-whitelist=registry.my.com"}, image: "registry.my.com/app:1", wantAllowed: true},
		{name: "the file alone", args: []string{good}, image: "quay.io/app:1"},
		{name: "a flag given explicitly overrides the file", args: []string{good, "--registry-whitelist=quay.io"}, image: "quay.io/app:1", wantAllowed: true},
		{name: "a broken entry without a file", args: []string{"--registry-whitelist=https://quay.io"}, wantErr: `--registry-whitelist: registry entry "https://quay.io": drop the URL scheme`},
		{name: "a wildcard entry with a file, which flags do not take", args: []string{good, "--registry-whitelist=*.my.com"}, wantErr: `--registry-whitelist: registry entry "*.my.com"`},
		{name: "a broken mirror with a file", args: []string{good, "--registry-mirror=docker.io=mirror"}, wantErr: `--registry-mirror: rewrite docker.io=mirror: TO "mirror"`},
		{name: "a bad mode with a file", args: []string{good, "--mode=audit"}, wantErr: `--mode: unknown mode "audit"`},
		{name: "a broken file", args: []string{file("bad.yaml", "default:\n  allowedRegistries: [\"https://x\"]\n")}, wantErr: "invalid policy file:\n" + dir + `/bad.yaml:4: default.allowedRegistries[0]: registry entry "https://x"`},
		{name: "a missing file", args: []string{"--config=" + dir + "/none.yaml"}, wantErr: "invalid policy file:\nopen " + dir + "/none.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := config.DefaultPolicy()
			fs := pflag.NewFlagSet("check", pflag.ContinueOnError)
			p.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			p.MarkExplicit(fs, envFunc(nil))
			pol, _, err := p.Compile()
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("Compile(): got error %v, want one starting %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Compile(): got error %v, want nil", err)
			}
			if d := pol.Evaluate(policy.Input{Images: []policy.Image{{Ref: tc.image}}}); d.Allowed != tc.wantAllowed {
				t.Errorf("got %s allowed %v, want %v (%s)", tc.image, d.Allowed, tc.wantAllowed, d.Reason())
			}
		})
	}
}

func TestParseLogLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"info", slog.LevelInfo},
		{"warn", slog.LevelWarn},
		{"error", slog.LevelError},
		{"ERROR", slog.LevelError},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := config.ParseLogLevel(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("ParseLogLevel(%q): got %v, %v, want %v, nil", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestSplitList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,", nil},
		{"a", []string{"a"}},
		{"a, b,,c", []string{"a", "b", "c"}},
		{"\ta\n,b ", []string{"a", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			if got := config.SplitList(tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("SplitList(%q): got %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

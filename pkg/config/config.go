// Package config holds imagegate's settings: their defaults, their flags,
// the kube-image-bouncer compatible environment variables, validation, and
// the one way from them to a compiled policy ([PolicyConfig.Compile]).
//
// Precedence, lowest first: Default(), then environment variables
// (ApplyEnv), then command-line flags. AddServeFlags and AddPolicyFlags
// register every flag with the struct's current value as its default, so
// calling them after ApplyEnv makes flags win and shows the effective
// defaults in --help.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/imagegate/imagegate/pkg/digest"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/policyfile"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

// Config is everything `imagegate serve` needs.
type Config struct {
	// Listen is the HTTPS listen address for reviews.
	Listen string
	// Port is kube-image-bouncer's --port; when non-zero it overrides the
	// port of Listen.
	Port int
	// TLSCertFile and TLSKeyFile hold the serving certificate and key (PEM).
	TLSCertFile string
	TLSKeyFile  string
	// ClientCAFile, when set, makes the server require client certificates
	// signed by one of its CAs.
	ClientCAFile string
	// AllowedClientNames, when set, also requires the client certificate to
	// carry one of these names as its subject common name or as a DNS, email
	// or URI subject alternative name. It needs ClientCAFile.
	AllowedClientNames []string
	// MetricsListen is the plain-HTTP address of /metrics, /healthz and
	// /readyz; empty turns that listener off.
	MetricsListen string
	// EnablePprof serves Go's profiles (net/http/pprof) under /debug/pprof/
	// on the metrics listener; off by default, as they expose internals.
	EnablePprof bool
	// RequestTimeout bounds the handling of one review.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds how long in-flight reviews may finish on SIGTERM.
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is text or json.
	LogFormat string

	Policy PolicyConfig
	// Registry is how the mutating webhook asks registries for digests,
	// with --pin-digests or pinDigests in the policy file.
	Registry RegistryConfig
}

// RegistryConfig is how imagegate asks registries which digest a tag
// names (serve's mutating webhook, check --pin-digests).
type RegistryConfig struct {
	// CAFile is a PEM bundle trusted besides the system roots.
	CAFile string
	// CredentialsFile is a Docker config.json (a kubernetes.io/dockerconfigjson
	// Secret's key); empty: anonymous.
	CredentialsFile string
	// Timeout bounds one lookup; ReviewTimeout all the lookups of one
	// mutate review, below the webhook's timeoutSeconds.
	Timeout, ReviewTimeout time.Duration
	// CacheTTL is how long a resolved digest is reused.
	CacheTTL time.Duration
}

// DefaultRegistry returns the default registry client settings.
func DefaultRegistry() RegistryConfig {
	return RegistryConfig{Timeout: digest.DefaultTimeout, ReviewTimeout: 3 * time.Second, CacheTTL: digest.DefaultTTL}
}

// AddFlags registers the registry client flags.
func (r *RegistryConfig) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&r.CAFile, "registry-ca-file", r.CAFile, "with --pin-digests, a PEM bundle of CAs trusted for registries besides the system roots")
	fs.StringVar(&r.CredentialsFile, "registry-credentials", r.CredentialsFile,
		"with --pin-digests, a Docker config.json (the .dockerconfigjson of a kubernetes.io/dockerconfigjson Secret) with registry credentials, re-read when it changes; anonymous without")
	fs.DurationVar(&r.Timeout, "registry-timeout", r.Timeout, "with --pin-digests, how long one registry lookup may take; an image not resolved in time is left unpinned")
	fs.DurationVar(&r.ReviewTimeout, "registry-review-timeout", r.ReviewTimeout, "with --pin-digests, how long all the lookups of one mutate review may take; keep it below the webhook's timeoutSeconds")
	fs.DurationVar(&r.CacheTTL, "digest-cache-ttl", r.CacheTTL, "with --pin-digests, how long a tag's resolved digest is reused before the registry is asked again")
}

// Validate checks the registry client settings; it does not read any file.
func (r RegistryConfig) Validate() error {
	var errs []error
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--registry-timeout", r.Timeout}, {"--registry-review-timeout", r.ReviewTimeout}, {"--digest-cache-ttl", r.CacheTTL}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.flag, d.v))
		}
	}
	return errors.Join(errs...)
}

// DigestOptions returns the resolver's options.
func (r RegistryConfig) DigestOptions() digest.Options {
	return digest.Options{Timeout: r.Timeout, TTL: r.CacheTTL, CAFile: r.CAFile, CredentialsFile: r.CredentialsFile}
}

// PolicyConfig is the part of Config that `imagegate check` shares with
// `imagegate serve`.
type PolicyConfig struct {
	// AllowedRegistries lists allowed registries and repository paths
	// (--registry-whitelist, BOUNCER_REGISTRY_WHITELIST).
	AllowedRegistries []string
	// RejectLatest denies untagged and :latest images without a digest.
	RejectLatest bool
	// AllowBreakGlass honours break-glass annotations (always audited).
	AllowBreakGlass bool
	// RequireFullyQualified denies short names such as nginx:1.25, which
	// CRI-O and Podman resolve through registries.conf.
	RequireFullyQualified bool
	// PinDigests has the mutating webhook pin tags to the digests their
	// registries serve.
	PinDigests bool
	// Mode is enforce or warn.
	Mode string
	// RegistryMirrors are rewrite rules, FROM=TO, that send images to an
	// approved mirror (served by POST /mutate).
	RegistryMirrors []string
	// File is the policy file (--config). Empty means the flags above are
	// the whole policy; otherwise they override the file's default rule
	// where given explicitly (see FileOverrides).
	File string
	// FileOverrides are the policy settings given explicitly, by flag or
	// environment, that override the file's default rule. MarkExplicit sets
	// them, and only when File is set.
	FileOverrides policyfile.Overrides

	// emptyWhitelist names the setting that gave the whitelist without an
	// entry (--registry-whitelist or BOUNCER_REGISTRY_WHITELIST), or is "":
	// Options refuses it, as it would allow every registry.
	emptyWhitelist string
}

// Default returns the settings used when nothing else is said.
func Default() Config {
	return Config{
		Listen:          ":8443",
		MetricsListen:   ":9090",
		RequestTimeout:  10 * time.Second,
		ShutdownTimeout: 25 * time.Second,
		LogLevel:        "info",
		LogFormat:       "text",
		Policy:          DefaultPolicy(),
		Registry:        DefaultRegistry(),
	}
}

// DefaultPolicy returns the default policy settings: reject latest, allow
// audited break-glass, enforce, and no registry whitelist.
func DefaultPolicy() PolicyConfig {
	return PolicyConfig{RejectLatest: true, AllowBreakGlass: true, Mode: string(policy.ModeEnforce)}
}

// Environment variables accepted for drop-in compatibility with
// kube-image-bouncer.
const (
	EnvCertificate       = "BOUNCER_CERTIFICATE"
	EnvKey               = "BOUNCER_KEY"
	EnvPort              = "BOUNCER_PORT"
	EnvRegistryWhitelist = "BOUNCER_REGISTRY_WHITELIST"
)

// ApplyEnv reads kube-image-bouncer's environment variables through
// lookup (os.LookupEnv). Empty variables are ignored, except that
// BOUNCER_REGISTRY_WHITELIST set without an entry is an error (see
// [PolicyConfig.ApplyEnv]).
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	if v, _ := lookup(EnvCertificate); v != "" {
		c.TLSCertFile = v
	}
	if v, _ := lookup(EnvKey); v != "" {
		c.TLSKeyFile = v
	}
	if v, _ := lookup(EnvPort); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%s=%q: not a port number", EnvPort, v)
		}
		c.Port = port
	}
	return c.Policy.ApplyEnv(lookup)
}

// ApplyEnv reads BOUNCER_REGISTRY_WHITELIST through lookup
// (os.LookupEnv). Set but without an entry (an unset templating variable,
// say), it makes Options fail rather than allow every registry; a
// --registry-whitelist flag given after it still wins.
func (p *PolicyConfig) ApplyEnv(lookup func(string) (string, bool)) error {
	v, ok := lookup(EnvRegistryWhitelist)
	if !ok {
		return nil
	}
	if p.AllowedRegistries = SplitList(v); len(p.AllowedRegistries) == 0 {
		p.emptyWhitelist = EnvRegistryWhitelist
	}
	return nil
}

// whitelistError refuses a whitelist given explicitly without an entry:
// allowing every registry must be said by leaving the setting out.
func (p PolicyConfig) whitelistError() error {
	switch p.emptyWhitelist {
	case "":
		return nil
	case EnvRegistryWhitelist:
		return errors.New(EnvRegistryWhitelist + " is set but empty: that would allow images from every registry; list the allowed registries in it, or unset it (and leave allowedRegistries out of the policy file) to allow every registry deliberately")
	default:
		return errors.New("--registry-whitelist is empty: that would allow images from every registry; list the allowed registries, or leave the flag out (and allowedRegistries out of the policy file) to allow every registry deliberately")
	}
}

// AddServeFlags registers the server flags, including kube-image-bouncer's
// aliases (--cert/-c, --key/-k, --port/-p), and the policy flags.
func (c *Config) AddServeFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "HTTPS address to serve reviews on, host:port")
	fs.IntVarP(&c.Port, "port", "p", c.Port, "port to serve on (kube-image-bouncer alias; overrides the port of --listen)")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", c.TLSCertFile, "serving certificate, PEM (required)")
	fs.StringVarP(&c.TLSCertFile, "cert", "c", c.TLSCertFile, "alias of --tls-cert-file (kube-image-bouncer)")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", c.TLSKeyFile, "private key of the serving certificate, PEM (required)")
	fs.StringVarP(&c.TLSKeyFile, "key", "k", c.TLSKeyFile, "alias of --tls-key-file (kube-image-bouncer)")
	fs.StringVar(&c.ClientCAFile, "client-ca-file", c.ClientCAFile, "if set, require client certificates signed by a CA in this PEM bundle (re-read when it changes)")
	fs.StringSliceVar(&c.AllowedClientNames, "allowed-client-names", c.AllowedClientNames,
		"with --client-ca-file, also require the client certificate's common name or a subject alternative name to be one of these, comma-separated and repeatable")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "plain-HTTP address for /metrics, /healthz and /readyz, host:port; empty turns it off")
	fs.BoolVar(&c.EnablePprof, "enable-pprof", c.EnablePprof, "serve Go profiles under /debug/pprof/ on the metrics listener (needs --metrics-listen; do not expose it beyond the pod)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", c.RequestTimeout, "upper bound for handling one review")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "on SIGTERM, how long in-flight reviews may take to finish")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	c.Policy.AddFlags(fs)
	c.Registry.AddFlags(fs)
}

// AddFlags registers the policy flags shared by serve and check.
func (p *PolicyConfig) AddFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&p.AllowedRegistries, "registry-whitelist", p.AllowedRegistries,
		"allowed registries (host[:port]) and repository paths (host[:port]/path), comma-separated and repeatable; leave it out to allow every registry (given empty, it is an error)")
	fs.BoolVar(&p.RejectLatest, "reject-latest", p.RejectLatest, "deny images without a tag or digest, or tagged latest")
	fs.BoolVar(&p.AllowBreakGlass, "allow-break-glass", p.AllowBreakGlass, "let a pod's *.image-policy.k8s.io/break-glass annotation override denials (always audited)")
	fs.BoolVar(&p.RequireFullyQualified, "require-fully-qualified", p.RequireFullyQualified,
		"deny short names such as nginx:1.25, which CRI-O and Podman resolve through registries.conf: an image must name its registry; the mutating webhook writes them out in full")
	fs.BoolVar(&p.PinDigests, "pin-digests", p.PinDigests,
		"pin each tagged image the policy allows to the digest its registry serves (repo:tag@sha256:...), in the mutating webhook; an image that cannot be resolved is left unpinned, with a warning (requireDigest then refuses it)")
	fs.StringVar(&p.Mode, "mode", p.Mode, "enforce: deny violations; warn: allow them but report them (to roll a policy out)")
	fs.StringSliceVar(&p.RegistryMirrors, "registry-mirror", p.RegistryMirrors,
		"rewrite images to an approved mirror, FROM=TO (e.g. docker.io=registry.my.com/dockerhub): FROM a registry or repository path, TO a registry and path prefix; comma-separated and repeatable; served by the mutating webhook (POST /mutate)")
	fs.StringVar(&p.File, "config", p.File, "policy file (YAML ImagePolicy) with a default rule and namespace rules; the policy flags above, when given, override its default rule")
}

// MarkExplicit records, when a policy file is set, which policy settings
// were given explicitly (flags in fs, or BOUNCER_REGISTRY_WHITELIST through
// lookup), so they override the file's default rule and nothing else does.
// With or without a file, it records a --registry-whitelist given without
// an entry, which Options then refuses. Call it after parsing fs.
func (p *PolicyConfig) MarkExplicit(fs *pflag.FlagSet, lookup func(string) (string, bool)) {
	if fs.Changed("registry-whitelist") { // the flag replaces the variable
		p.emptyWhitelist = ""
		if len(splitValues(p.AllowedRegistries)) == 0 {
			p.emptyWhitelist = "--registry-whitelist"
		}
	}
	if p.File == "" {
		return
	}
	o := policyfile.Overrides{}
	if _, set := lookup(EnvRegistryWhitelist); set || fs.Changed("registry-whitelist") {
		list := splitValues(p.AllowedRegistries)
		o.AllowedRegistries = &list
	}
	given := func(flag string, v bool) *bool {
		if !fs.Changed(flag) {
			return nil
		}
		return &v
	}
	o.RejectLatest = given("reject-latest", p.RejectLatest)
	o.AllowBreakGlass = given("allow-break-glass", p.AllowBreakGlass)
	o.RequireFullyQualified = given("require-fully-qualified", p.RequireFullyQualified)
	o.PinDigests = given("pin-digests", p.PinDigests)
	if fs.Changed("mode") {
		mode := strings.ToLower(strings.TrimSpace(p.Mode))
		o.Mode = &mode
	}
	if fs.Changed("registry-mirror") {
		rules, _ := ParseMirrors(p.RegistryMirrors) // Options reports a broken one
		o.Rewrites = &rules
	}
	p.FileOverrides = o
}

// Compile is the one way from settings to a policy: the flags alone, or,
// with File, the policy file on the default rule DefaultPolicy describes,
// with the settings given explicitly applied to it. The flags are checked
// as flags either way (see Options). It returns the lint warnings as users
// read them, located in the file when there is one.
func (p PolicyConfig) Compile() (*policy.Policy, []string, error) {
	opts, err := p.Options()
	if err != nil {
		return nil, nil, err
	}
	if p.File != "" {
		data, err := policyfile.Read(p.File)
		var l *policyfile.Loaded
		if err == nil {
			defaults, _ := DefaultPolicy().Options() // valid by construction
			l, err = policyfile.Parse(p.File, data, defaults.Rule(), p.FileOverrides)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("invalid policy file:\n%w", err)
		}
		return l.Policy, l.Warnings, nil
	}
	pol, err := policy.New(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid policy: %w", err)
	}
	warnings := make([]string, len(pol.Warnings()))
	for i, w := range pol.Warnings() {
		warnings[i] = w.String()
	}
	return pol, warnings, nil
}

// ParseMirrors splits --registry-mirror values (comma-separated FROM=TO
// rules) into rules, reporting each one without "=".
func ParseMirrors(values []string) ([]rewrite.Rule, error) {
	var rules []rewrite.Rule
	var errs []error
	for _, v := range splitValues(values) {
		r, err := rewrite.ParseRule(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--registry-mirror: %w", err))
			continue
		}
		rules = append(rules, r)
	}
	return rules, errors.Join(errs...)
}

// Options turns the policy settings into policy options, checking each as
// a flag, with or without a policy file: every error names the setting.
func (p PolicyConfig) Options() (policy.Options, error) {
	if err := p.whitelistError(); err != nil {
		return policy.Options{}, err
	}
	opts := policy.Options{AllowedRegistries: splitValues(p.AllowedRegistries), RejectLatest: p.RejectLatest, AllowBreakGlass: p.AllowBreakGlass,
		RequireFullyQualified: p.RequireFullyQualified, PinDigests: p.PinDigests}
	var errs, entryErrs []error
	var err error
	if opts.Mode, err = policy.ParseMode(p.Mode); err != nil {
		errs = append(errs, fmt.Errorf("--mode: %w", err))
	}
	for _, raw := range opts.AllowedRegistries {
		if _, err := policy.ParseRegistryEntry(raw); err != nil {
			entryErrs = append(entryErrs, err)
		}
	}
	if err := errors.Join(entryErrs...); err != nil {
		errs = append(errs, fmt.Errorf("--registry-whitelist: %w", err))
	}
	if opts.Rewrites, err = ParseMirrors(p.RegistryMirrors); err != nil {
		errs = append(errs, err)
	} else if _, err := rewrite.New(opts.Rewrites); err != nil {
		errs = append(errs, fmt.Errorf("--registry-mirror: %w", err))
	}
	return opts, errors.Join(errs...)
}

// Validate checks the server and policy settings; it does not read any file.
func (c *Config) Validate() error {
	var errs []error
	if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required: the apiserver only calls webhooks over HTTPS (make run generates a throwaway pair)"))
	}
	if len(c.AllowedClientNames) > 0 && c.ClientCAFile == "" {
		errs = append(errs, errors.New("--allowed-client-names needs --client-ca-file: without a CA to verify them, client certificate names prove nothing"))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("--metrics-listen %q: want host:port (or empty to turn it off)", c.MetricsListen))
		}
	}
	if c.EnablePprof && c.MetricsListen == "" {
		errs = append(errs, errors.New("--enable-pprof needs --metrics-listen: profiles are served on the metrics listener only"))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d: out of range", c.Port))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--request-timeout %s: must be positive", c.RequestTimeout))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s: must not be negative", c.ShutdownTimeout))
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if _, err := c.Policy.Options(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Registry.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Address returns the listen address with --port applied.
func (c *Config) Address() string {
	if c.Port == 0 {
		return c.Listen
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		host = "" // --listen is only a default here; --port names the port
	}
	return net.JoinHostPort(host, strconv.Itoa(c.Port))
}

// ParseLogLevel parses a --log-level value.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// splitValues is SplitList over a repeatable flag's values.
func splitValues(values []string) []string { return SplitList(strings.Join(values, ",")) }

// SplitList splits comma-separated values, trimming blanks and dropping
// empty items, so "a, b,,c" is [a b c].
func SplitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

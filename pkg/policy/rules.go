package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/imagegate/imagegate/pkg/rewrite"
)

// DefaultRuleName names the rule that judges namespaces no other rule
// claims.
const DefaultRuleName = "default"

// RuleOptions configure one rule: the default rule or a namespace rule.
type RuleOptions struct {
	// Name identifies the rule in messages, audit annotations and
	// explanations. The default rule is always named "default".
	Name string
	// Namespaces are the namespace names and globs ("team-*") the rule
	// claims; empty for the default rule. See [Policy.RuleFor] for which
	// rule wins when several match.
	Namespaces []string
	// AllowedRegistries lists registries and repository paths images may
	// come from, in any form [ParseAllowedEntry] takes. Empty turns the
	// registry check off.
	AllowedRegistries []string
	// RejectLatest denies images with no tag and no digest, or tagged latest.
	RejectLatest bool
	// RequireDigest denies images not pinned by a digest.
	RequireDigest bool
	// RequireFullyQualified denies short names, images whose first path
	// component is not a registry host ("nginx:1.25", "library/nginx"):
	// CRI-O and Podman resolve those through registries.conf, so what is
	// judged as docker.io may be pulled from elsewhere. The mutating
	// webhook writes such images out in full first (see [Policy.Rewrite]).
	// An exemption does not waive it: a short name has no registry for an
	// exemption to name.
	RequireFullyQualified bool
	// ExemptImages are images no check applies to (but they must parse):
	// exact references with a tag or digest ("registry.k8s.io/pause:3.10"),
	// or repository entries as in AllowedRegistries ("registry.k8s.io/pause").
	// An exact reference is compared as the runtime pulls it: with a
	// digest, repository@digest whatever the tag; without, repository:tag,
	// latest when no tag is written. So "pause:3.10" does not exempt
	// "pause:3.10@sha256:…", which pulls that digest.
	ExemptImages []string
	// DeniedRepositories are refused even where AllowedRegistries allow
	// them, in the forms AllowedRegistries takes.
	DeniedRepositories []string
	// Mode is enforce (the default when empty) or warn.
	Mode Mode
	// BreakGlass says whether and for whom break-glass annotations
	// override violations.
	BreakGlass BreakGlassOptions
	// Rewrites send images to an approved mirror before they are judged
	// (by the mutating webhook; see [Policy.Rewrite]): FROM a registry or
	// repository path, TO a mirror registry and path prefix.
	Rewrites []rewrite.Rule
	// PinDigests has the mutating webhook pin each tagged image the rule
	// allows to the digest its registry serves for the tag, "repo:tag" to
	// "repo:tag@sha256:…" (see [Policy.Pins]). It decides nothing on the
	// validating paths: RequireDigest refuses what could not be pinned.
	PinDigests bool
}

// BreakGlassOptions restrict break-glass under one rule.
type BreakGlassOptions struct {
	// Enabled lets a pod's break-glass annotation override violations.
	Enabled bool
	// RequireTicket refuses break-glass without a ticket.
	RequireTicket bool
	// AllowedUsers and AllowedGroups, when either is set, let only these
	// users or members of these groups break glass. Only AdmissionReviews
	// carry the requesting user; an ImageReview has no identity, so under
	// such a rule break-glass through ImagePolicyWebhook is refused.
	AllowedUsers  []string
	AllowedGroups []string
	// MaxAge, when set, requires an expiry annotation
	// (<prefix>.image-policy.k8s.io/expires: RFC 3339 time) no further
	// than MaxAge ahead. An expired annotation is refused whatever MaxAge,
	// except where the operation is unknown (see [Input.OperationUnknown]).
	MaxAge time.Duration
}

// Spec is a whole policy: a default rule and namespace rules.
type Spec struct {
	// Default judges every namespace no rule in Rules claims.
	Default RuleOptions
	// Rules are the namespace rules, in the order written; the order
	// breaks ties between equally specific globs.
	Rules []RuleOptions
	// Source says where the policy came from, e.g. a file name. When set,
	// every decision carries the policy-hash and policy-rule audit
	// annotations, and lint warnings name the field they are about.
	Source string
}

// FieldError is an invalid setting, with the path of the field that holds
// it: "default.allowedRegistries[1]", "rules[0].namespaces[2]". A policy
// file loader maps the path back to a line.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Warning is a setting that is valid but probably not what the operator
// meant, with the path of the field that holds it, as in [FieldError]; the
// path is empty when the warning is about the whole policy, or when the
// policy has no [Spec.Source] to locate it in.
type Warning struct{ Path, Message string }

// String renders the warning as "path: message", or the message alone.
func (w Warning) String() string {
	if w.Path == "" {
		return w.Message
	}
	return w.Path + ": " + w.Message
}

// unwrapFieldErrors drops the field paths, which mean nothing to a user of
// command-line flags.
func unwrapFieldErrors(err error) error {
	var out []error
	for _, e := range flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			e = fe.Err
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// rule is a compiled RuleOptions.
type rule struct {
	name          string
	patterns      []string // the namespaces it claims, as written, first claims only
	whitelist     []RegistryEntry
	allowedList   string // whitelist rendered once for messages
	rejectLatest  bool
	requireDigest bool
	requireFQ     bool // RequireFullyQualified
	pinDigests    bool
	exemptRefs    []string // canonical references
	exemptRepos   []RegistryEntry
	denied        []RegistryEntry
	mode          Mode
	breakGlass    BreakGlassOptions
	rewriter      *rewrite.Rewriter // nil: rewrites nothing
}

// glob is a compiled namespace pattern: literal parts between "*"s.
type glob struct {
	pattern string
	parts   []string // split on "*"; len(parts) > 1
	literal int      // number of non-"*" characters
	rule    *rule
}

// match reports whether ns matches the glob, without allocating.
func (g *glob) match(ns string) bool {
	first, last := g.parts[0], g.parts[len(g.parts)-1]
	if len(ns) < g.literal || !strings.HasPrefix(ns, first) || !strings.HasSuffix(ns, last) {
		return false
	}
	rest := ns[len(first) : len(ns)-len(last)]
	for _, part := range g.parts[1 : len(g.parts)-1] {
		i := strings.Index(rest, part)
		if i < 0 {
			return false
		}
		rest = rest[i+len(part):]
	}
	return true
}

// Compile validates spec and compiles it into a Policy. Every invalid
// setting is reported as a [FieldError]; problems that do not make the
// policy invalid but are probably mistakes are returned by
// [Policy.Warnings].
func Compile(spec Spec) (*Policy, error) {
	p := &Policy{exact: map[string]*rule{}, source: spec.Source, annotate: spec.Source != "", linted: map[string]bool{}, cache: newVerdictCache()}
	all := make([]*rule, 0, 1+len(spec.Rules))
	var errs []error
	spec.Default.Name = DefaultRuleName
	p.def = p.compileRule(spec.Default, DefaultRuleName, &errs)
	all = append(all, p.def)
	if len(spec.Default.Namespaces) > 0 {
		errs = append(errs, &FieldError{Path: "default.namespaces", Err: errors.New("the default rule applies to every namespace no other rule claims; it takes no namespaces")})
	}
	if len(p.def.whitelist) == 0 {
		p.warnings = append(p.warnings, Warning{Message: "no registry whitelist is configured: images from every registry are allowed"})
	}
	names := map[string]int{}
	claimed := map[string]string{} // pattern -> rule that claimed it first
	for i, ro := range spec.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		switch {
		case ro.Name == "":
			errs = append(errs, &FieldError{Path: path + ".name", Err: errors.New("every rule needs a name (it appears in audit annotations and explanations)")})
		case ro.Name == DefaultRuleName:
			errs = append(errs, &FieldError{Path: path + ".name", Err: fmt.Errorf("%q is the default rule's name; choose another", DefaultRuleName)})
		case !validRuleName(ro.Name):
			errs = append(errs, &FieldError{Path: path + ".name", Err: fmt.Errorf("rule name %q: use lower-case letters, digits, '-' and '.' (at most 63)", ro.Name)})
		default:
			if j, dup := names[ro.Name]; dup {
				errs = append(errs, &FieldError{Path: path + ".name", Err: fmt.Errorf("rule name %q is already used by rules[%d]", ro.Name, j)})
			}
			names[ro.Name] = i
		}
		r := p.compileRule(ro, path, &errs)
		all = append(all, r)
		if len(ro.Namespaces) == 0 {
			errs = append(errs, &FieldError{Path: path + ".namespaces", Err: fmt.Errorf("rule %q claims no namespace; list names or globs such as \"team-*\"", ro.Name)})
		}
		reachable := false
		for j, pat := range ro.Namespaces {
			fpath := fmt.Sprintf("%s.namespaces[%d]", path, j)
			if err := validNamespacePattern(pat); err != nil {
				errs = append(errs, &FieldError{Path: fpath, Err: err})
				continue
			}
			if prev, ok := claimed[pat]; ok {
				p.warnings = append(p.warnings, Warning{fpath, fmt.Sprintf("rule %q's namespace %q is already claimed by rule %q, which wins; this entry never applies", ro.Name, pat, prev)})
				continue
			}
			claimed[pat] = ro.Name
			reachable = true
			r.patterns = append(r.patterns, pat)
			if pat == "*" {
				p.warnings = append(p.warnings, Warning{fpath, fmt.Sprintf("rule %q claims every namespace with \"*\", so the default rule never applies; put these settings in default instead", ro.Name)})
			}
			if !strings.Contains(pat, "*") {
				p.exact[pat] = r
				continue
			}
			parts := strings.Split(pat, "*")
			p.globs = append(p.globs, glob{pattern: pat, parts: parts, literal: len(pat) - (len(parts) - 1), rule: r})
		}
		if !reachable && len(ro.Namespaces) > 0 {
			p.warnings = append(p.warnings, Warning{path, fmt.Sprintf("rule %q can never match: every namespace it lists is claimed by an earlier rule", ro.Name)})
		}
	}
	// Most specific first: more literal characters, then the order written
	// (SortStableFunc keeps it for ties).
	slices.SortStableFunc(p.globs, func(a, b glob) int { return b.literal - a.literal })
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p.hash = p.computeHash(all)
	p.linted = nil
	return p, nil
}

// RuleFor returns the name of the rule that judges namespace ns and the
// namespace entry that selected it ("" for the default rule). The order:
//  1. a rule that names ns exactly;
//  2. the glob with the most non-"*" characters ("team-a-*" before
//     "team-*" before "*"); between equally long globs, the rule written
//     first;
//  3. the default rule.
func (p *Policy) RuleFor(ns string) (name, matchedBy string) {
	r, by := p.ruleFor(ns)
	return r.name, by
}

func (p *Policy) ruleFor(ns string) (*rule, string) {
	if r, ok := p.exact[ns]; ok {
		return r, ns
	}
	for i := range p.globs {
		if p.globs[i].match(ns) {
			return p.globs[i].rule, p.globs[i].pattern
		}
	}
	return p.def, ""
}

// compileRule compiles one rule, appending its errors (with path) to errs
// and its warnings to p.
func (p *Policy) compileRule(ro RuleOptions, path string, errs *[]error) *rule {
	r := &rule{
		name:          ro.Name,
		rejectLatest:  ro.RejectLatest,
		requireDigest: ro.RequireDigest,
		requireFQ:     ro.RequireFullyQualified,
		pinDigests:    ro.PinDigests,
		mode:          ro.Mode,
		breakGlass:    ro.BreakGlass,
	}
	if r.mode == "" {
		r.mode = ModeEnforce
	}
	if _, err := ParseMode(string(r.mode)); err != nil {
		*errs = append(*errs, &FieldError{Path: path + ".mode", Err: err})
	}
	warn := func(field string, i int, msg string) {
		// A namespace rule inherits the default rule's lists: report a
		// finding about one entry once, where it is first written.
		if p.linted[msg] {
			return
		}
		p.linted[msg] = true
		w := Warning{Message: msg}
		if p.source != "" { // flags have no field path to show
			w.Path = fmt.Sprintf("%s.%s[%d]", path, field, i)
		}
		p.warnings = append(p.warnings, w)
	}
	entries := func(field string, raws []string) []RegistryEntry {
		var out []RegistryEntry
		seen := map[string]bool{}
		for i, raw := range raws {
			e, err := ParseAllowedEntry(raw)
			if err != nil {
				*errs = append(*errs, &FieldError{Path: fmt.Sprintf("%s.%s[%d]", path, field, i), Err: err})
				continue
			}
			if seen[e.String()] {
				continue
			}
			seen[e.String()] = true
			if w := lintEntry(e); w != "" {
				warn(field, i, w)
			}
			out = append(out, e)
		}
		return out
	}
	r.whitelist = entries("allowedRegistries", ro.AllowedRegistries)
	if p.source != "" { // flags predate this lint; keep their warnings as they were
		lintCovered(r.whitelist, func(i int, msg string) { warn("allowedRegistries", i, msg) })
	}
	names := make([]string, len(r.whitelist))
	for i, e := range r.whitelist {
		names[i] = e.String()
	}
	r.allowedList = strings.Join(names, ", ")
	r.denied = entries("deniedRepositories", ro.DeniedRepositories)
	for i, raw := range ro.ExemptImages {
		fpath := fmt.Sprintf("%s.exemptImages[%d]", path, i)
		s := strings.TrimSpace(raw)
		// With a "/" or a digest, and no wildcard, it may be an exact
		// reference; without, it is a registry host[:port] entry.
		if !strings.Contains(s, "*") && strings.ContainsAny(s, "/@") {
			named, err := reference.ParseNormalizedNamed(s)
			if err != nil {
				*errs = append(*errs, &FieldError{Path: fpath, Err: fmt.Errorf("exempt image %q: %w", raw, err)})
				continue
			}
			if !reference.IsNameOnly(named) {
				r.exemptRefs = append(r.exemptRefs, canonicalRef(named))
				continue
			}
		}
		e, err := ParseAllowedEntry(raw)
		if err != nil {
			*errs = append(*errs, &FieldError{Path: fpath, Err: err})
			continue
		}
		if w := lintEntry(e); w != "" {
			warn("exemptImages", i, w)
		}
		r.exemptRepos = append(r.exemptRepos, e)
	}
	// Sorted for exemption's binary search; the order written means nothing.
	slices.Sort(r.exemptRefs)
	r.exemptRefs = slices.Compact(r.exemptRefs)
	p.compileRewrites(r, ro, path, errs, warn)
	p.rewrites = p.rewrites || r.requireFQ
	p.pins = p.pins || r.pinDigests
	bg := ro.BreakGlass
	if bg.MaxAge < 0 {
		*errs = append(*errs, &FieldError{Path: path + ".breakGlass.maxAge", Err: fmt.Errorf("maxAge %s must not be negative", bg.MaxAge)})
	}
	return r
}

// covers reports whether entry a matches everything entry b matches.
func covers(a, b RegistryEntry) bool {
	var domains bool
	switch {
	case !a.Wildcard:
		domains = !b.Wildcard && a.Domain == b.Domain
	case b.Wildcard && a.Domain == b.Domain:
		domains = a.Apex || !b.Apex
	default: // "*.x.com" covers "a.x.com" and "*.a.x.com"
		domains = a.MatchesDomain(b.Domain)
	}
	return domains && (a.Path == "" || b.Path == a.Path || strings.HasPrefix(b.Path, a.Path+"/"))
}

// lintCovered reports each entry of es that another entry covers, naming
// the first such entry in order. Only entries that could cover e are looked
// up, by exact key: those at its path or a "/"-boundary prefix of it, on
// its domain or, for wildcards, a "."-boundary parent of it; so n entries
// cost O(n), not O(n²).
func lintCovered(es []RegistryEntry, report func(i int, msg string)) {
	type key struct {
		wildcard, apex bool
		domain, path   string
	}
	index := make(map[key]int, len(es))
	wildcards := map[string]bool{} // domains of wildcard entries
	for j, e := range es {
		k := key{e.Wildcard, e.Apex, e.Domain, e.Path}
		if _, dup := index[k]; !dup {
			index[k] = j
		}
		wildcards[e.Domain] = wildcards[e.Domain] || e.Wildcard
	}
	var domains []string
	for i, e := range es {
		// Wildcards may cover e from its own domain or a parent on the same
		// port, as imageref's MatchesDomain splits host and port.
		host, port := e.Domain, ""
		if c := strings.LastIndexByte(host, ':'); c >= 0 && !strings.Contains(host[c:], "]") {
			host, port = host[:c], host[c:]
		}
		domains = domains[:0]
		for d := host; d != ""; {
			if wildcards[d+port] {
				domains = append(domains, d+port)
			}
			_, d, _ = strings.Cut(d, ".")
		}
		best := -1
		consider := func(k key) {
			if j, ok := index[k]; ok && j != i && (best < 0 || j < best) && covers(es[j], e) && (!covers(e, es[j]) || j < i) {
				best = j
			}
		}
		for path := e.Path; ; {
			consider(key{false, false, e.Domain, path})
			for _, d := range domains {
				consider(key{true, false, d, path})
				consider(key{true, true, d, path})
			}
			if path == "" {
				break
			}
			k := max(strings.LastIndexByte(path, '/'), 0)
			path = path[:k]
		}
		if best >= 0 {
			report(i, fmt.Sprintf("registry entry %q is already covered by %q", e.Raw, es[best].Raw))
		}
	}
}

func validRuleName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validNamespacePattern accepts a namespace name (an RFC 1123 label) in
// which any run of characters may be replaced by "*".
func validNamespacePattern(pat string) error {
	if pat == "" {
		return errors.New("namespace is empty")
	}
	if len(pat) > 63 {
		return fmt.Errorf("namespace %q is longer than 63 characters", pat)
	}
	for _, c := range pat {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '*' {
			return fmt.Errorf("namespace %q: a namespace name or glob uses lower-case letters, digits, '-' and '*' only", pat)
		}
	}
	if strings.Contains(pat, "**") {
		return fmt.Errorf("namespace %q: write one '*'; it already matches any run of characters", pat)
	}
	return nil
}

// breakGlassRefusal returns why the rule refuses bg for in, or "".
func (r *rule) breakGlassRefusal(bg BreakGlass, in Input) string {
	o := r.breakGlass
	if o.RequireTicket && len(bg.Tickets) == 0 {
		return fmt.Sprintf(`rule %q requires a ticket: add <prefix>.image-policy.k8s.io/ticket: "<ticket>" or use the "<prefix>.image-policy.k8s.io/<ticket>: break-glass" form`, r.name)
	}
	if len(o.AllowedUsers) > 0 || len(o.AllowedGroups) > 0 {
		allowed := slices.Contains(o.AllowedUsers, in.User)
		for _, g := range in.Groups {
			allowed = allowed || slices.Contains(o.AllowedGroups, g)
		}
		switch {
		case in.User == "" && len(in.Groups) == 0:
			return fmt.Sprintf("rule %q lets only some users or groups break glass, and this request does not say who sent it (an ImageReview carries no user)", r.name)
		case in.User == "" && !allowed:
			return fmt.Sprintf("rule %q lets only some users or groups break glass, and this request carries no user and none of those groups", r.name)
		case !allowed:
			return fmt.Sprintf("rule %q does not let user %q break glass", r.name, truncate(in.User, maxTicketLen))
		}
	}
	if len(bg.Expires) == 0 && o.MaxAge > 0 {
		return fmt.Sprintf("rule %q requires an expiry: add <prefix>.image-policy.k8s.io/expires with an RFC 3339 time at most %s ahead", r.name, o.MaxAge)
	}
	now := in.Time
	if now.IsZero() {
		now = time.Now()
	}
	for _, raw := range bg.Expires {
		exp, err := time.Parse(time.RFC3339, raw)
		switch {
		case err != nil:
			return fmt.Sprintf("expiry %q is not an RFC 3339 time such as 2025-01-31T18:00:00Z", raw)
		case !exp.After(now) && !in.OperationUnknown:
			return fmt.Sprintf("break-glass expired at %s", exp.UTC().Format(time.RFC3339))
		case o.MaxAge > 0 && exp.After(now.Add(o.MaxAge)):
			return fmt.Sprintf("expiry %s is more than %s ahead, the most rule %q allows", exp.UTC().Format(time.RFC3339), o.MaxAge, r.name)
		}
	}
	return ""
}

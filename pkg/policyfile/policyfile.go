// Package policyfile reads imagegate's policy file: a YAML ImagePolicy with a
// default rule and namespace rules, decoded strictly (an unknown field, a
// wrong type or an invalid entry is an error naming the file, line and
// field) and compiled into a policy.Policy.
//
//	apiVersion: imagegate.dev/v1alpha1
//	kind: ImagePolicy
//	default:
//	  allowedRegistries: [registry.my.com]
//	rules:
//	  - name: team-a
//	    namespaces: [team-a, team-a-*]
//	    allowedRegistries: [registry.my.com, "*.team-a.example.com"]
//
// A namespace rule inherits every field it does not set from the default
// rule, and the default rule from the base the caller gives. Command-line
// policy flags given explicitly override the default rule's fields (see
// [Overrides]).
package policyfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

// APIVersion and Kind identify a policy file.
const (
	APIVersion = "imagegate.dev/v1alpha1"
	Kind       = "ImagePolicy"
)

// MaxFileBytes bounds a policy file; a policy is a few kilobytes.
const MaxFileBytes = 1 << 20

// File is the policy file's schema.
type File struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	// Default judges every namespace no rule claims.
	Default Rule `yaml:"default"`
	// Rules are the namespace rules.
	Rules []NamespaceRule `yaml:"rules"`
}

// Rule is what a rule checks. A field left out (nil) is inherited: a
// namespace rule's from the default rule, the default rule's from the base
// given to [Parse] (imagegate's: rejectLatest true, breakGlass enabled,
// mode enforce).
type Rule struct {
	AllowedRegistries *[]string `yaml:"allowedRegistries"`
	RejectLatest      *bool     `yaml:"rejectLatest"`
	RequireDigest     *bool     `yaml:"requireDigest"`
	// RequireFullyQualified denies short names ("nginx:1.25"), which the
	// mutating webhook writes out in full (docker.io/library/nginx:1.25).
	RequireFullyQualified *bool       `yaml:"requireFullyQualified"`
	ExemptImages          *[]string   `yaml:"exemptImages"`
	DeniedRepositories    *[]string   `yaml:"deniedRepositories"`
	Mode                  *string     `yaml:"mode"`
	BreakGlass            *BreakGlass `yaml:"breakGlass"`
	// Rewrites send images to an approved mirror before they are judged
	// (the mutating webhook). A namespace rule that sets it replaces the
	// default rule's list; an empty list turns rewriting off.
	Rewrites *[]Rewrite `yaml:"rewrites"`
	// PinDigests has the mutating webhook pin tagged images to the digest
	// their registry serves (repo:tag@sha256:…).
	PinDigests *bool `yaml:"pinDigests"`
}

// Rewrite is one rewrite rule: images under From (a registry or repository
// path, as in allowedRegistries but without wildcards) go to the mirror To
// (a registry and optional path prefix).
type Rewrite struct {
	From string `yaml:"from"`
	To   string `yaml:"to"`
}

// NamespaceRule is a rule for the namespaces it names.
type NamespaceRule struct {
	Name       string   `yaml:"name"`
	Namespaces []string `yaml:"namespaces"`
	Rule       `yaml:",inline"`
}

// BreakGlass restricts break-glass; fields left out are inherited.
type BreakGlass struct {
	Enabled       *bool     `yaml:"enabled"`
	RequireTicket *bool     `yaml:"requireTicket"`
	AllowedUsers  *[]string `yaml:"allowedUsers"`
	AllowedGroups *[]string `yaml:"allowedGroups"`
	MaxAge        *string   `yaml:"maxAge"`
}

// Overrides are the policy settings given on the command line (or through
// the environment). Each non-nil field replaces the file's default-rule
// field, and so reaches every namespace rule that inherits it.
type Overrides struct {
	AllowedRegistries     *[]string       // --registry-whitelist, BOUNCER_REGISTRY_WHITELIST
	RejectLatest          *bool           // --reject-latest
	AllowBreakGlass       *bool           // --allow-break-glass
	RequireFullyQualified *bool           // --require-fully-qualified
	PinDigests            *bool           // --pin-digests
	Mode                  *string         // --mode
	Rewrites              *[]rewrite.Rule // --registry-mirror
}

// Loaded is a compiled policy file.
type Loaded struct {
	// Policy is the compiled policy, carrying Hash.
	Policy *policy.Policy
	// Spec is what was compiled, after inheritance and overrides.
	Spec policy.Spec
	// Hash identifies the effective policy (policy.Policy.Hash): comments,
	// formatting and key order do not change it.
	Hash string
	// Warnings are lint findings, each "file:line: field: message".
	Warnings []string
}

// Read reads the policy file at path; one larger than MaxFileBytes is an
// error.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path) //nolint:gosec // reading the operator's policy file is the point
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileBytes)
	}
	return data, nil
}

// Parse decodes and compiles a policy file's content; name is used in
// messages. The default rule starts from base, which the file's default
// rule changes and o then overrides. Every error says where:
// "name:line: field: message".
func Parse(name string, data []byte, base policy.RuleOptions, o Overrides) (*Loaded, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the file is empty; it needs apiVersion: %s and kind: %s", name, APIVersion, Kind)
		}
		return nil, locateYAMLError(name, data, err, nil)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s:%d: a policy file holds one YAML document; remove everything after the first", name, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the file must be a YAML mapping with apiVersion, kind, default and rules", name, root.Line)
	}
	if err := checkAliases(name, root); err != nil {
		return nil, err
	}
	w := &walker{name: name, lines: map[string]int{}}
	w.walk(root, reflect.TypeFor[File](), "")
	if len(w.errs) > 0 {
		return nil, joinCapped(name, w.errs)
	}
	var file File
	if err := root.Decode(&file); err != nil {
		return nil, locateYAMLError(name, data, err, w.lines)
	}
	var errs []error
	if file.APIVersion != APIVersion || file.Kind != Kind {
		errs = append(errs, fmt.Errorf("%s:%d: apiVersion %q and kind %q: want apiVersion %s and kind %s",
			name, w.line("apiVersion", "kind"), file.APIVersion, file.Kind, APIVersion, Kind))
	}
	if o.AllowedRegistries != nil {
		w.forget("default.allowedRegistries") // the flag's entries are not on the file's lines
	}
	if o.Rewrites != nil {
		w.forget("default.rewrites")
	}
	spec := file.spec(base, o, func(path string, err error) { errs = append(errs, w.locate(path, err)) })
	if len(errs) > 0 {
		return nil, joinCapped(name, errs)
	}
	spec.Source = name
	p, err := policy.Compile(spec)
	if err != nil {
		for _, e := range flatten(err) {
			var fe *policy.FieldError
			if errors.As(e, &fe) {
				if w.inherited(fe.Path) {
					continue // reported where the default rule says it
				}
				e = w.locate(fe.Path, fe.Err)
			} else {
				e = fmt.Errorf("%s: %w", name, e)
			}
			errs = append(errs, e)
		}
		return nil, joinCapped(name, errs)
	}
	l := &Loaded{Policy: p, Spec: spec, Hash: p.Hash()}
	for _, pw := range p.Warnings() {
		msg := name + ": " + pw.Message
		if pw.Path != "" {
			msg = w.locate(pw.Path, errors.New(pw.Message)).Error()
		}
		l.Warnings = append(l.Warnings, msg)
	}
	return l, nil
}

// spec resolves inheritance and overrides into a policy.Spec, reporting
// settings the policy package cannot see (durations) through fail.
func (f *File) spec(base policy.RuleOptions, o Overrides, fail func(path string, err error)) policy.Spec {
	def := f.Default.apply(base, "default", fail)
	if o.AllowedRegistries != nil {
		def.AllowedRegistries = *o.AllowedRegistries
	}
	if o.RejectLatest != nil {
		def.RejectLatest = *o.RejectLatest
	}
	if o.AllowBreakGlass != nil {
		def.BreakGlass.Enabled = *o.AllowBreakGlass
	}
	if o.RequireFullyQualified != nil {
		def.RequireFullyQualified = *o.RequireFullyQualified
	}
	if o.PinDigests != nil {
		def.PinDigests = *o.PinDigests
	}
	if o.Mode != nil {
		def.Mode = policy.Mode(*o.Mode)
	}
	if o.Rewrites != nil {
		def.Rewrites = slices.Clone(*o.Rewrites)
	}
	spec := policy.Spec{Default: def}
	for i, nr := range f.Rules {
		r := nr.apply(def, fmt.Sprintf("rules[%d]", i), fail)
		r.Name, r.Namespaces = nr.Name, nr.Namespaces
		spec.Rules = append(spec.Rules, r)
	}
	return spec
}

// apply returns base with every field r sets replaced.
func (r Rule) apply(base policy.RuleOptions, path string, fail func(string, error)) policy.RuleOptions {
	out := base
	out.Namespaces = nil
	setList(&out.AllowedRegistries, r.AllowedRegistries)
	setList(&out.ExemptImages, r.ExemptImages)
	setList(&out.DeniedRepositories, r.DeniedRepositories)
	set(&out.RejectLatest, r.RejectLatest)
	set(&out.RequireDigest, r.RequireDigest)
	set(&out.RequireFullyQualified, r.RequireFullyQualified)
	set(&out.PinDigests, r.PinDigests)
	if r.Mode != nil {
		out.Mode = policy.Mode(*r.Mode)
	}
	if r.Rewrites != nil {
		out.Rewrites = make([]rewrite.Rule, len(*r.Rewrites))
		for i, rw := range *r.Rewrites {
			out.Rewrites[i] = rewrite.Rule{From: rw.From, To: rw.To}
		}
	}
	if bg := r.BreakGlass; bg != nil {
		set(&out.BreakGlass.Enabled, bg.Enabled)
		set(&out.BreakGlass.RequireTicket, bg.RequireTicket)
		setList(&out.BreakGlass.AllowedUsers, bg.AllowedUsers)
		setList(&out.BreakGlass.AllowedGroups, bg.AllowedGroups)
		if bg.MaxAge != nil {
			d, err := time.ParseDuration(strings.TrimSpace(*bg.MaxAge))
			if err != nil || d <= 0 {
				fail(path+".breakGlass.maxAge", fmt.Errorf("maxAge %q: want a positive duration such as 30m, 4h or 168h", *bg.MaxAge))
			}
			out.BreakGlass.MaxAge = d
		}
	}
	return out
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func setList(dst *[]string, v *[]string) {
	if v != nil {
		*dst = slices.Clone(*v)
	}
}

// maxAliasNodes bounds how many nodes YAML aliases may add to a file. A
// policy reuses a list in a few dozen rules at most (a 100-entry list in 50
// rules adds 5,000), while the schema walk and the decoder pay for every
// node an alias adds: unbounded, a 25 KB file of aliases costs 140 MiB
// before yaml.v3 refuses it as "excessive aliasing", a 51 KB one 540 MiB.
const maxAliasNodes = 10_000

// aliasCap saturates expanded sizes, which nested aliases make exponential.
const aliasCap int64 = 1 << 40

// checkAliases refuses a file whose aliases expand it by more than
// maxAliasNodes nodes. Each node's expanded size is counted once, so the
// count costs no more than the file, and a cycle counts as aliasCap.
func checkAliases(name string, root *yaml.Node) error {
	c := aliasCounter{sizes: map[*yaml.Node]int64{}}
	expanded := c.size(root)
	literal := int64(len(c.sizes))
	if expanded-literal <= maxAliasNodes {
		return nil
	}
	n := strconv.FormatInt(expanded, 10)
	if expanded >= aliasCap {
		n = "at least " + strconv.FormatInt(aliasCap, 10)
	}
	return fmt.Errorf("%s:%d: the policy file expands to %s nodes through YAML aliases (the file itself has %d); imagegate lets aliases add at most %d: write the lists out or use fewer aliases",
		name, c.first.Line, n, literal, maxAliasNodes)
}

type aliasCounter struct {
	sizes map[*yaml.Node]int64 // expanded size of every node seen
	first *yaml.Node           // the first alias
}

func (c *aliasCounter) size(n *yaml.Node) int64 {
	if s, ok := c.sizes[n]; ok {
		return s
	}
	c.sizes[n] = aliasCap // until counted: an alias back to n is a cycle
	s := int64(1)
	if n.Kind == yaml.AliasNode {
		if c.first == nil {
			c.first = n
		}
		if n.Alias != nil {
			s = c.size(n.Alias)
		}
	}
	for _, child := range n.Content {
		s = min(s+c.size(child), aliasCap)
	}
	c.sizes[n] = s
	return s
}

// maxErrors bounds the errors one file reports: the first ones say what to
// fix, each costs work to place, and a hostile file may hold 100,000.
const maxErrors = 20

// joinCapped joins the first maxErrors of errs and counts the rest.
func joinCapped(name string, errs []error) error {
	if len(errs) > maxErrors {
		errs = append(errs[:maxErrors:maxErrors], moreErrors(name, len(errs)-maxErrors))
	}
	return errors.Join(errs...)
}

func moreErrors(name string, n int) error { return fmt.Errorf("%s: … and %d more errors", name, n) }

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// walker checks a YAML node tree against the schema's field names, so an
// unknown key is an error with its line, and records the line of every
// field path for later messages.
type walker struct {
	name  string
	lines map[string]int // "rules[0].allowedRegistries[1]" -> line
	errs  []error
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		var names []string
		collectFields(t, fields, &names)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := key.Value
			if path != "" {
				p = path + "." + key.Value
			}
			ft, ok := fields[key.Value]
			if !ok {
				w.errs = append(w.errs, fmt.Errorf("%s:%d: %s", w.name, key.Line, unknownField(key.Value, path, names)))
				continue
			}
			w.lines[p] = key.Line
			w.walk(val, ft, p)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.lines[p] = item.Line
			w.walk(item, t.Elem(), p)
		}
	}
}

func collectFields(t reflect.Type, fields map[string]reflect.Type, names *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			collectFields(f.Type, fields, names)
			continue
		}
		fields[tag] = f.Type
		*names = append(*names, tag)
	}
}

func unknownField(key, path string, known []string) string {
	where := "at the top level"
	if path != "" {
		where = "in " + path
	}
	for _, k := range known {
		if strings.EqualFold(k, key) || strings.EqualFold(k, key+"s") || strings.EqualFold(k+"s", key) {
			return fmt.Sprintf("unknown field %q %s; did you mean %q?", key, where, k)
		}
	}
	return fmt.Sprintf("unknown field %q %s; known fields: %s", key, where, strings.Join(known, ", "))
}

// inherited reports whether path is a namespace rule's field that the rule
// does not set, so its value, and any error in it, is the default rule's.
func (w *walker) inherited(path string) bool {
	rest, ok := strings.CutPrefix(path, "rules[")
	if !ok {
		return false
	}
	_, rest, _ = strings.Cut(rest, "].")
	field, _, _ := strings.Cut(rest, ".")
	field, _, _ = strings.Cut(field, "[")
	if field == "name" || field == "namespaces" || field == "" {
		return false
	}
	key := path[:len(path)-len(rest)] + field
	_, set := w.lines[key]
	return !set
}

// forget drops the lines of path and everything below it.
func (w *walker) forget(path string) {
	for p := range w.lines {
		if p == path || strings.HasPrefix(p, path+"[") || strings.HasPrefix(p, path+".") {
			delete(w.lines, p)
		}
	}
}

// line returns the line of the first path that has one, or 1.
func (w *walker) line(paths ...string) int {
	for _, p := range paths {
		if l, ok := w.lines[p]; ok {
			return l
		}
	}
	return 1
}

// locate turns a field error into "name:line: path: message", using the
// line of the longest prefix of path the file has (a field inherited from
// the default rule is reported where the rule is).
func (w *walker) locate(path string, err error) error {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := w.lines[p]; ok {
			return fmt.Errorf("%s:%d: %s: %w", w.name, l, path, err)
		}
	}
	return fmt.Errorf("%s: %s: %w", w.name, path, err)
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// unquotedStar finds a plain YAML value starting with "*", which YAML reads
// as an alias.
var unquotedStar = regexp.MustCompile(`(^|[-:\[,])\s*\*`)

func lineOf(data []byte, n int) []byte {
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(data, '\n')
		if j < 0 {
			return nil
		}
		data = data[j+1:]
	}
	if j := bytes.IndexByte(data, '\n'); j >= 0 {
		data = data[:j]
	}
	return data
}

var yamlLine = regexp.MustCompile(`^line (\d+): `)

// locateYAMLError rewrites the YAML library's "yaml: line N: ..." and
// "line N: cannot unmarshal ..." messages as "name:N: field: ...".
func locateYAMLError(name string, data []byte, err error, lines map[string]int) error {
	var te *yaml.TypeError
	msgs := []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var out []error
	var fields map[int]string
	for _, msg := range msgs[:min(len(msgs), maxErrors)] {
		m := yamlLine.FindStringSubmatch(msg)
		if m == nil {
			out = append(out, fmt.Errorf("%s: %s", name, msg))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		rest := msg[len(m[0]):]
		if strings.Contains(rest, "unknown anchor") || unquotedStar.Match(lineOf(data, line)) || unquotedStar.Match(lineOf(data, line+1)) {
			rest += `; quote entries that start with "*", as in "*.example.com"`
		}
		if fields == nil {
			fields = deepestPaths(lines)
		}
		if field := fields[line]; field != "" {
			rest = field + ": " + rest
		}
		out = append(out, fmt.Errorf("%s:%d: %s", name, line, rest))
	}
	if len(msgs) > maxErrors {
		out = append(out, moreErrors(name, len(msgs)-maxErrors))
	}
	return errors.Join(out...)
}

// deepestPaths maps each line to the deepest field path recorded at it
// (the first in byte order between equally long ones), built once for all
// of a file's errors.
func deepestPaths(lines map[string]int) map[int]string {
	best := make(map[int]string, len(lines))
	for p, l := range lines {
		if b, ok := best[l]; !ok || len(p) > len(b) || len(p) == len(b) && p < b {
			best[l] = p
		}
	}
	return best
}

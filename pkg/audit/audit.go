// Package audit judges what already runs in a cluster: it reads what
// `kubectl get pods,deployments,statefulsets,daemonsets,jobs,cronjobs -A -o
// json` prints (a List, a typed list such as PodList, or a single object)
// and reports every container whose image the policy finds a violation in,
// so an operator can see what enforcing a policy would refuse before turning
// it on.
//
// With rewrite rules, each object is judged as the cluster would judge it
// after the mutating webhook: its images rewritten to the mirrors first. The
// images a rewrite would change are reported apart from the findings (see
// [Rewrite]), together with the checks the rewrite would fix; what is still
// refused after the rewrite is a finding that says what the image was
// rewritten to.
package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
)

// Place is where an image is: the object and the container in it.
type Place struct {
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	// Container names the container; Source says what it is when not a
	// plain container ("init container", "ephemeral container", "volume").
	Container string `json:"container"`
	Source    string `json:"source,omitempty"`
}

// at is the place of a container of the object at pl.
func (pl Place) at(container, source string) Place {
	pl.Container, pl.Source = container, source
	return pl
}

// containerLabel is the container column of the tables.
func (pl Place) containerLabel() string {
	if pl.Source != "" {
		return pl.Container + " (" + pl.Source + ")"
	}
	return pl.Container
}

// Finding is one violation of one container's image.
type Finding struct {
	Place
	// APIVersion and UID identify the object with Kind and Name, as a
	// report's resource reference needs it; UID is empty when the input
	// has none.
	APIVersion string `json:"apiVersion"`
	UID        string `json:"uid,omitempty"`
	Image      string `json:"image"`
	// Rewritten is what the rewrite rules make of Image, which is then
	// what was judged; empty when no rule rewrites it.
	Rewritten string `json:"rewritten,omitempty"`
	// Check is the check violated (registry, latest-tag, ...) and RuleName
	// the policy rule that judged the namespace.
	Check    policy.Check `json:"rule"`
	RuleName string       `json:"policyRule"`
	// Outcome is what the policy would do with the object now: denied, or
	// admitted anyway by warn mode or a break-glass annotation.
	Outcome policy.Outcome `json:"outcome"`
	Reason  string         `json:"reason"`
	// BreakGlassRefused says why the object's break-glass request would be
	// refused, when it has one.
	BreakGlassRefused string `json:"breakGlassRefused,omitempty"`
}

// message is the finding's reason as the table prints it: what the image
// was rewritten to, the reason, and why break-glass was refused.
func (f Finding) message() string {
	reason := f.Reason
	if f.Rewritten != "" {
		reason = "rewritten to " + f.Rewritten + ": " + reason
	}
	if f.BreakGlassRefused != "" {
		reason += " (break-glass refused: " + f.BreakGlassRefused + ")"
	}
	return reason
}

// Rewrite is one image the mutating webhook would rewrite: to a mirror,
// or, under a rule that requires fully qualified references, a short name
// to its qualified form (and then, maybe, to a mirror).
type Rewrite struct {
	Place
	// Image is the image as it runs now, Rewritten its mirror, and Mirror
	// the rewrite rule (FROM=TO, normalised).
	Image     string `json:"image"`
	Rewritten string `json:"rewritten"`
	Mirror    string `json:"mirror,omitempty"`
	// Qualified is the short name Image written out in full, which the
	// mirror rules saw; empty when Image named its registry.
	Qualified string `json:"qualified,omitempty"`
	// RuleName is the policy rule whose rewrites applied.
	RuleName string `json:"policyRule"`
	// Fixes are the checks the image as it runs now violates and the
	// rewritten one passes: what the rewrite fixes. Empty when the image
	// passed as it was.
	Fixes []policy.Check `json:"fixes,omitempty"`
	// Remaining are the checks the rewritten image still violates; the
	// findings say how, and what the policy would do.
	Remaining []policy.Check `json:"remaining,omitempty"`
}

// Report is the result of an audit.
type Report struct {
	// Findings are in input order, then image order, then rule order.
	Findings []Finding `json:"findings"`
	// Rewrites are the images the rewrite rules would change, in input
	// order, then image order.
	Rewrites []Rewrite `json:"rewrites,omitempty"`
	// Tags are the tagged images of rules that pin digests, with what
	// each tag resolves to today once [Report.ResolveTags] has asked the
	// registries; in input order, then image order.
	Tags []Tag `json:"tags,omitempty"`
	// Objects counts the objects judged, Images the images in them.
	Objects int `json:"objects"`
	Images  int `json:"images"`
	// Skipped counts objects of kinds that run no pods, by kind
	// ("v1 Service").
	Skipped map[string]int `json:"skipped,omitempty"`
	// Policy is the hash of the policy that judged.
	Policy string `json:"policy"`
}

// object is the part of an item read before its kind is known.
type object struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

// Audit reads kubectl's JSON output from r and judges every pod and pod
// template in it with p.
func Audit(p *policy.Policy, r io.Reader) (*Report, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	rep := &Report{Policy: p.Hash()}
	dec := json.NewDecoder(bytes.NewReader(data))
	for n := 0; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			if n == 0 {
				return nil, errors.New("the input is empty; pipe in `kubectl get pods,deployments,statefulsets,daemonsets,jobs,cronjobs -A -o json`")
			}
			break
		} else if err != nil {
			return nil, fmt.Errorf("the input is not kubectl's JSON output: %w", err)
		}
		if err := rep.add(p, raw, fmt.Sprintf("document %d", n+1)); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

func (rep *Report) add(p *policy.Policy, raw json.RawMessage, where string) error {
	var obj object
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if obj.Kind == "List" || strings.HasSuffix(obj.Kind, "List") || (obj.Kind == "" && obj.Items != nil) {
		for i, item := range obj.Items {
			if err := rep.add(p, item, fmt.Sprintf("%s item %d", where, i)); err != nil {
				return err
			}
		}
		return nil
	}
	gv, err := schema.ParseGroupVersion(obj.APIVersion)
	if err != nil || obj.Kind == "" {
		return fmt.Errorf("%s: an object without a valid apiVersion and kind (%q %q); use kubectl get -o json", where, obj.APIVersion, obj.Kind)
	}
	kind := metav1.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: obj.Kind}
	in, ok, err := admission.ReadObject(kind, obj.Metadata.Namespace, raw)
	if !ok {
		if rep.Skipped == nil {
			rep.Skipped = map[string]int{}
		}
		rep.Skipped[obj.APIVersion+" "+obj.Kind]++
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %s %s/%s: %w", where, obj.Kind, obj.Metadata.Namespace, obj.Metadata.Name, err)
	}
	rep.Objects++
	rep.Images += len(in.Images)
	if len(in.Images) == 0 {
		return nil // a template without containers is not a pod worth reporting
	}
	// What the mutating webhook would make of the images, judged as the
	// validating path would judge them then.
	plan, d := p.EvaluateMutated(in)
	object := Place{Namespace: obj.Metadata.Namespace, Kind: obj.Kind, Name: obj.Metadata.Name}
	rep.addTags(p, object, in, plan, raw)
	for _, v := range d.Violations {
		rep.Findings = append(rep.Findings, Finding{
			Place: object.at(v.Container, v.Source), APIVersion: obj.APIVersion,
			UID: obj.Metadata.UID, Image: v.Image, Rewritten: v.Rewritten,
			Check: v.Check, RuleName: d.RuleName, Outcome: d.Outcome, Reason: v.Message,
			BreakGlassRefused: d.BreakGlassRefused,
		})
	}
	if !plan.Changed() {
		return nil
	}
	before := p.Evaluate(in) // the checks each image fails as it runs now
	for i, img := range in.Images {
		r := plan.Results[i]
		if !r.Changed() {
			continue
		}
		rw := Rewrite{
			Place: object.at(img.Container, img.Source), Image: img.Ref, Rewritten: r.Rewritten,
			Mirror: r.Mirror.String(), Qualified: r.Qualified, RuleName: plan.RuleName,
		}
		for _, v := range before.Violations {
			if judges(v, img, "") && !slices.ContainsFunc(d.Violations, func(after policy.Violation) bool {
				return judges(after, img, r.Rewritten) && after.Check == v.Check
			}) {
				rw.Fixes = append(rw.Fixes, v.Check)
			}
		}
		for _, v := range d.Violations {
			if judges(v, img, r.Rewritten) {
				rw.Remaining = append(rw.Remaining, v.Check)
			}
		}
		rep.Rewrites = append(rep.Rewrites, rw)
	}
	return nil
}

// judges reports whether v is about img, judged as rewritten ("" for as
// written).
func judges(v policy.Violation, img policy.Image, rewritten string) bool {
	return v.Container == img.Container && v.Source == img.Source && v.Image == img.Ref && v.Rewritten == rewritten
}

// WriteTable writes the findings as an aligned table with a header, then a
// summary line.
func (rep *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(rep.Findings) > 0 {
		fmt.Fprintln(tw, "NAMESPACE\tKIND/NAME\tCONTAINER\tIMAGE\tRULE\tOUTCOME\tREASON")
	}
	for _, f := range rep.Findings {
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s/%s\t%s\t%s\n", f.Namespace, f.Kind, f.Name, f.containerLabel(),
			quoteIfNeeded(f.Image), f.RuleName, f.Check, f.Outcome, f.message())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Rewrites) > 0 {
		if len(rep.Findings) > 0 {
			fmt.Fprintln(w)
		}
		if rep.qualified() > 0 {
			fmt.Fprintln(w, "Images the mutating webhook would rewrite (short names written out in full, to a mirror):")
		} else {
			fmt.Fprintln(w, "Images the mutating webhook would rewrite to a mirror:")
		}
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAMESPACE\tKIND/NAME\tCONTAINER\tIMAGE\tREWRITTEN\tRULE\tFIXES")
		for _, r := range rep.Rewrites {
			fixes := "-"
			if len(r.Fixes) > 0 {
				fixes = joinRules(r.Fixes)
			}
			if len(r.Remaining) > 0 {
				fixes += " (still " + joinRules(r.Remaining) + ": see the findings)"
			}
			fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", r.Namespace, r.Kind, r.Name, r.containerLabel(),
				quoteIfNeeded(r.Image), r.Rewritten, r.RuleName, fixes)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Findings)+len(rep.Rewrites) > 0 && len(rep.Tags) > rep.tagCounts()["current"] { // a section follows
		fmt.Fprintln(w)
	}
	if err := rep.writeTags(w); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d finding(s) in %d object(s) with %d image(s), policy %s%s%s%s\n",
		len(rep.Findings), rep.Objects, rep.Images, rep.Policy, rep.rewriteNote(), rep.tagNote(), rep.skippedNote())
	return err
}

func joinRules(rules []policy.Check) string {
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = string(r)
	}
	return strings.Join(names, ",")
}

// rewriteNote counts the images a rewrite would change, and those it would
// make pass.
func (rep *Report) rewriteNote() string {
	if len(rep.Rewrites) == 0 {
		return ""
	}
	fixed := 0
	for _, r := range rep.Rewrites {
		if len(r.Fixes) > 0 && len(r.Remaining) == 0 {
			fixed++
		}
	}
	if q := rep.qualified(); q > 0 {
		return fmt.Sprintf("; %d image(s) rewritten (%d short name(s) written out in full), %d of them fixed by it", len(rep.Rewrites), q, fixed)
	}
	return fmt.Sprintf("; %d image(s) rewritten to a mirror, %d of them fixed by it", len(rep.Rewrites), fixed)
}

// qualified counts the rewrites that write a short name out in full.
func (rep *Report) qualified() int {
	n := 0
	for _, r := range rep.Rewrites {
		if r.Qualified != "" {
			n++
		}
	}
	return n
}

func (rep *Report) skippedNote() string {
	if len(rep.Skipped) == 0 {
		return ""
	}
	kinds := make([]string, 0, len(rep.Skipped))
	for k, n := range rep.Skipped {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	slices.Sort(kinds)
	return "; skipped (no pods): " + strings.Join(kinds, ", ")
}

// quoteIfNeeded quotes an image with spaces or control characters, so a
// hostile reference cannot break the table.
func quoteIfNeeded(s string) string {
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '"' {
			return fmt.Sprintf("%q", s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}

// WriteJSON writes the report as one indented JSON object.
func (rep *Report) WriteJSON(w io.Writer) error {
	if rep.Findings == nil {
		rep.Findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

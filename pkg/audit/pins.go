package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
)

// Tag is one tagged image under a rule that pins digests, and what its tag
// resolves to today: whether the object runs it unpinned, and whether the
// tag has moved since it was admitted or pulled.
type Tag struct {
	Place
	// Image is the image as written; Lookup the tag asked for, as it will
	// be pulled (after the rewrite rules, normalised, without a digest).
	Image  string `json:"image"`
	Lookup string `json:"lookup"`
	// Pinned is the digest the reference carries: empty for an image
	// that runs by tag.
	Pinned string `json:"pinned,omitempty"`
	// Running is the digest a pod's container status says it runs
	// (status.containerStatuses[].imageID); empty for pod templates and
	// containers not started.
	Running string `json:"running,omitempty"`
	// Resolved is the digest the tag resolves to today; Error why it could
	// not be resolved, made printable and cut to maxErrorLen bytes.
	Resolved string `json:"resolved,omitempty"`
	Error    string `json:"error,omitempty"`
	// Moved reports that the digest the object holds (Pinned, else
	// Running) is not the one the tag resolves to today.
	Moved bool `json:"moved,omitempty"`
}

// held is the digest the object holds: the one its reference carries,
// else the one its container status says it runs; empty for neither.
func (t Tag) held() string {
	if t.Pinned != "" {
		return t.Pinned
	}
	return t.Running
}

// state is what the table says of t.
func (t Tag) state() string {
	switch {
	case t.Resolved == "": // failed, or not asked (see Report.ResolveTags)
		return "unresolved"
	case t.Moved:
		return "moved"
	case t.Pinned == "":
		return "unpinned"
	}
	return "current"
}

// addTags notes the tagged images of in that its rule pins (see
// [policy.Policy.Tags]), with the digests a pod's statuses in raw say its
// containers run; [Report.ResolveTags] asks the registries.
func (rep *Report) addTags(p *policy.Policy, object Place, in policy.Input, plan policy.RewritePlan, raw json.RawMessage) {
	tags := p.Tags(in, plan)
	if len(tags) == 0 {
		return
	}
	var running map[string]string
	if object.Kind == "Pod" {
		running = runningDigests(raw)
	}
	for _, t := range tags {
		img := in.Images[t.Index]
		rep.Tags = append(rep.Tags, Tag{
			Place: object.at(img.Container, img.Source), Image: img.Ref, Lookup: t.Lookup, Pinned: t.Digest, Running: running[statusKey(img.Source, img.Container)],
		})
	}
}

// podStatus is the part of a Pod's status that says what its containers run.
type podStatus struct {
	Status struct {
		Containers          []containerStatus `json:"containerStatuses"`
		InitContainers      []containerStatus `json:"initContainerStatuses"`
		EphemeralContainers []containerStatus `json:"ephemeralContainerStatuses"`
	} `json:"status"`
}

type containerStatus struct {
	Name    string `json:"name"`
	ImageID string `json:"imageID"`
}

// runningDigests returns the digest each started container of the Pod in
// raw runs, by statusKey. The kubelet reports the runtime's imageID:
// "repo@sha256:…" (containerd, CRI-O) or "docker-pullable://repo@sha256:…";
// an image ID without a repository ("sha256:…", a config digest) is not a
// manifest digest and is left out.
func runningDigests(raw json.RawMessage) map[string]string {
	var pod podStatus
	if json.Unmarshal(raw, &pod) != nil {
		return nil
	}
	out := map[string]string{}
	for _, s := range []struct {
		source   string
		statuses []containerStatus
	}{{"", pod.Status.Containers}, {admission.SourceInitContainer, pod.Status.InitContainers}, {admission.SourceEphemeralContainer, pod.Status.EphemeralContainers}} {
		for _, c := range s.statuses {
			_, d, ok := strings.Cut(c.ImageID, "@")
			if ok && digest.Digest(d).Validate() == nil {
				out[statusKey(s.source, c.Name)] = d
			}
		}
	}
	return out
}

func statusKey(source, container string) string { return source + "/" + container }

// maxErrorLen bounds a lookup's error in the report: it may quote the
// registry's reply.
const maxErrorLen = 300

// ResolveTags asks res what each of rep.Tags resolves to today, each
// distinct tag once, a few at a time (see [admission.ResolveEach]), and so
// which run unpinned and which tags have moved. Without it every tag is
// "unresolved".
func (rep *Report) ResolveTags(ctx context.Context, res admission.Resolver) {
	admission.ResolveEach(ctx, res, len(rep.Tags), func(i int) string { return rep.Tags[i].Lookup }, func(i int, digest string, err error) {
		t := &rep.Tags[i]
		if err != nil {
			t.Error = policy.Printable(err.Error(), maxErrorLen)
			return
		}
		t.Resolved = digest
		t.Moved = t.held() != "" && t.held() != digest
	})
}

// tagCounts counts the tags by state.
func (rep *Report) tagCounts() map[string]int {
	n := map[string]int{}
	for _, t := range rep.Tags {
		n[t.state()]++
	}
	return n
}

// writeTags writes the tags not current: unpinned, moved or unresolved.
func (rep *Report) writeTags(w io.Writer) error {
	n := rep.tagCounts()
	if len(rep.Tags) == n["current"] {
		return nil
	}
	fmt.Fprintln(w, "Tags of rules that pin digests, and the digest each resolves to today:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tKIND/NAME\tCONTAINER\tIMAGE\tSTATE\tHELD\tTAG NOW")
	for _, t := range rep.Tags {
		state := t.state()
		if state == "current" {
			continue
		}
		now := t.Resolved
		if t.Error != "" {
			now = t.Error
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", t.Namespace, t.Kind, t.Name, t.containerLabel(),
			quoteIfNeeded(t.Image), state, orDash(t.held()), orDash(now))
	}
	return tw.Flush()
}

// tagNote is the summary line's account of the tags.
func (rep *Report) tagNote() string {
	if len(rep.Tags) == 0 {
		return ""
	}
	n := rep.tagCounts()
	return fmt.Sprintf("; %d tag(s) of pinning rules: %d unpinned, %d moved, %d unresolved, %d current",
		len(rep.Tags), n["unpinned"], n["moved"], n["unresolved"], n["current"])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

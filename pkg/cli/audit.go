package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/imagegate/imagegate/pkg/audit"
	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/digest"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/version"
)

// audit judges what already runs: what kubectl printed, or what the
// apiserver lists.
func (a *App) audit(ctx context.Context, args []string) int {
	pc := config.DefaultPolicy()
	if err := pc.ApplyEnv(a.LookupEnv); err != nil {
		fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
		return ExitUsage
	}
	fs := pflag.NewFlagSet("audit", pflag.ContinueOnError)
	pc.AddFlags(fs)
	rc := config.DefaultRegistry()
	rc.AddFlags(fs)
	file := fs.StringP("filename", "f", "", "kubectl's JSON output to audit, or - for standard input")
	kubeconfig := fs.String("kubeconfig", "", "list the objects from the cluster of this kubeconfig file's current context")
	namespace := fs.StringP("namespace", "n", "", "list only this namespace (default: all namespaces)")
	chunkSize := fs.Int64("chunk-size", audit.DefaultChunkSize, "objects to list per page; 0 lists each kind in one response")
	output := fs.StringP("output", "o", "table", "table or json")
	report := fs.Bool("report", false, "write the findings to the cluster as OpenReports Reports, one per namespace (not with -f)")
	failOnFindings := fs.Bool("fail-on-findings", true, "exit 1 when there are findings; false exits 0 once the audit ran")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: imagegate audit -f FILE|- [flags]
       imagegate audit [--kubeconfig FILE] [-n NAMESPACE] [--report] [flags]

Report every container whose image the policy finds a violation in, from
what kubectl prints:

  kubectl get pods,deployments,statefulsets,daemonsets,jobs,cronjobs -A -o json \
    | imagegate audit --config policy.yaml -f -

A List, a typed list or a single object; pods and the pod templates of
workloads are judged in their namespace, objects of other kinds are skipped.

Without -f it lists them from the cluster itself, the one of --kubeconfig
or, run in a pod, its own (in-cluster configuration with the pod's service
account): pods, podtemplates, replicationcontrollers, deployments,
replicasets, statefulsets, daemonsets, jobs and cronjobs, in all namespaces
or --namespace, --chunk-size at a time. It needs list on each of them,
and prints what -f would print for the same objects.
Each finding names the namespace, kind/name, container, image, the rule
(policy rule/check), what the policy would do (denied, or admitted by warn
mode or break-glass) and why. With rewrite rules (--registry-mirror, or
rewrites in the policy file) images are judged as the mutating webhook
would rewrite them: the images a rewrite changes are listed apart, with the
checks it fixes, and what stays wrong is a finding naming the rewrite.
Run it before enforcing a policy.

Under rules that pin digests (--pin-digests, or pinDigests in the policy
file) it also asks the registries, as the mutating webhook would (the
--registry-* flags), what each tag allowed resolves to today, and lists
the images that run unpinned (by tag) and the tags that have moved: a
tag moved when the digest the object holds (its reference's, or for a
pod the one its container status says it runs) is not the one the tag
resolves to now. Neither is a finding, so neither changes the exit status.

With --report, listing from the cluster, it also writes the findings as
OpenReports Reports (openreports.io/v1alpha1, whose CRD must be installed:
the Helm chart's crds/ or config/audit-report): one Report named imagegate
in each namespace with findings, one result per finding (policy: the
policy rule, rule: the check, result fail with severity high when denied,
warn with severity medium when admitted by warn mode or break-glass, the
object, the reason, and when it was first found), updated in place on the
next run and deleted once the namespace is clean; at most 1000 results a
Report. It needs list, create, update and delete on reports.openreports.io,
and says on standard error what it wrote. Read them with

  kubectl get reports -A
  kubectl get report imagegate -n NAMESPACE -o yaml

Exit status: 0 no findings (or --fail-on-findings=false), 1 findings, 2
usage error, unreadable input, a list the apiserver refused or reports it
could not write.

Flags:
%s`, fs.FlagUsages())
	}
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(a.Stderr, "imagegate audit: unexpected arguments %q; the objects come from -f\n", fs.Args())
		return ExitUsage
	case *file != "" && (fs.Changed("kubeconfig") || fs.Changed("namespace") || fs.Changed("chunk-size")):
		fmt.Fprintln(a.Stderr, "imagegate audit: -f reads the objects from a file; --kubeconfig, --namespace and --chunk-size are for listing them from the cluster")
		return ExitUsage
	case *file != "" && *report:
		fmt.Fprintln(a.Stderr, "imagegate audit: --report writes to the cluster it lists; it is not for -f (use --kubeconfig, or run it in a pod)")
		return ExitUsage
	case *chunkSize < 0:
		fmt.Fprintf(a.Stderr, "imagegate audit: --chunk-size %d: want 0 or more\n", *chunkSize)
		return ExitUsage
	case *output != "table" && *output != "json":
		fmt.Fprintf(a.Stderr, "imagegate audit: --output %q: want table or json\n", *output)
		return ExitUsage
	}
	pc.MarkExplicit(fs, a.LookupEnv)
	p, warnings, err := pc.Compile()
	if err != nil {
		fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
		return ExitUsage
	}
	for _, w := range warnings {
		fmt.Fprintf(a.Stderr, "imagegate audit: warning: %s\n", w)
	}
	var res *digest.Resolver
	if p.HasPins() {
		if err = rc.Validate(); err == nil {
			res, err = digest.New(rc.DigestOptions())
		}
		if err != nil {
			fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
			return ExitUsage
		}
	}
	var rep *audit.Report
	var dc dynamic.Interface // the cluster listed, and written to with --report
	if *file != "" {
		rep, err = a.readAudit(p, *file)
	} else if dc, err = a.dynamicClient(*kubeconfig); err == nil {
		rep, err = audit.Live(ctx, p, dc, *namespace, *chunkSize)
	}
	if err != nil {
		fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
		return ExitUsage
	}
	if res != nil {
		rep.ResolveTags(ctx, res)
	}
	if *output == "json" {
		err = rep.WriteJSON(a.Stdout)
	} else {
		err = rep.WriteTable(a.Stdout)
	}
	if err != nil {
		fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
		return ExitUsage
	}
	if *report {
		// After the table, so that what was found is printed even when the
		// reports cannot be written.
		w, err := audit.WriteReports(ctx, dc, rep, *namespace, *chunkSize, time.Now())
		if err != nil {
			fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
			if w != (audit.Written{}) {
				fmt.Fprintf(a.Stderr, "imagegate audit: before that, %s\n", w)
			}
			return ExitUsage
		}
		fmt.Fprintln(a.Stderr, w)
	}
	if len(rep.Findings) > 0 && *failOnFindings {
		return ExitDenied
	}
	return ExitOK
}

// readAudit audits kubectl's JSON output in file, - for standard input.
func (a *App) readAudit(p *policy.Policy, file string) (*audit.Report, error) {
	in := a.Stdin
	if file != "-" {
		f, err := os.Open(file) //nolint:gosec // the file the operator named with -f
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	if in == nil {
		return nil, errors.New("no standard input")
	}
	rep, err := audit.Audit(p, in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return rep, nil
}

// dynamicClient reaches the cluster of kubeconfig or, without one, the
// cluster of the pod it runs in.
func (a *App) dynamicClient(kubeconfig string) (dynamic.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else if _, inPod := a.LookupEnv("KUBERNETES_SERVICE_HOST"); !inPod {
		// Asked through LookupEnv, as rest.InClusterConfig would ask the
		// process, so that tests see no cluster.
		return nil, errors.New("-f FILE, -f - (standard input) or --kubeconfig FILE is required outside a pod")
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("cluster configuration: %w", err)
	}
	cfg.UserAgent = "imagegate-audit/" + version.Version
	// Without a bound a stalled apiserver would hang the audit: it is given
	// no context that a signal cancels.
	cfg.Timeout = time.Minute
	return dynamic.NewForConfig(cfg)
}

#!/usr/bin/env bash
# The Helm chart config/helm/imagegate is the one hand-kept copy of
# imagegate's manifests; the kustomize files under config/ are rendered from
# it: the base with config/helm/render/base.yaml (namespace imagegate), each
# component's resources with base.yaml and that component's values file
# (audit-report's with the chart's crds/ too, helm template --include-crds).
# The components' kustomization.yaml patches (Deployment arguments and
# volumes, annotations) are kept by hand; the e2e scenario `helm` checks that
# `kubectl kustomize` of config/ with each component renders the objects the
# chart renders with its values file.
#
# Usage:
#   hack/render-config.sh                   rewrite config/*.yaml from the chart
#   hack/render-config.sh --check           fail, with a diff, when they differ,
#                                           or when a key of the chart's
#                                           values.yaml has no row in its README
#   hack/render-config.sh --template [base|COMPONENT] [HELM FLAG...]
#                                           print `helm template` of the base
#                                           (and COMPONENT), as rendered above
# Environment: HELM=path uses that helm instead of hack/install-helm.sh's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/config/helm/imagegate
CHART_README=${CHART}/README.md
VALUES=$ROOT/config/helm/render
COMPONENTS=(mutating-webhook cert-manager policy-file client-auth hpa prometheus audit-report digest-pinning)
# The chart's templates each part of config/ is made of (crds/NAME: the
# chart's crds/NAME.yaml). policy-file, client-auth and digest-pinning add
# no object of their own (kustomize patches and a configMapGenerator over
# config/policy-file/policy.yaml).
declare -A OUTPUTS=(
	[base]="namespace serviceaccount deployment service poddisruptionbudget validatingwebhookconfiguration"
	[mutating-webhook]=mutatingwebhookconfiguration
	[cert-manager]=certificate
	[hpa]=hpa
	[prometheus]="servicemonitor prometheusrule"
	[audit-report]="audit-serviceaccount audit-clusterrole audit-clusterrolebinding audit-cronjob crds/reports"
)

# template PART [HELM FLAG...]: helm template of the base, or of the base with
# component PART.
template() {
	local part=$1 args=(template imagegate "$CHART" --namespace imagegate -f "$VALUES/base.yaml")
	shift
	if [[ $part != base ]]; then
		[[ -f $VALUES/$part.yaml ]] || {
			echo "render-config: no component '$part' (have: ${COMPONENTS[*]})" >&2
			exit 2
		}
		args+=(-f "$VALUES/$part.yaml")
	fi
	# The same file as the kustomize component's configMapGenerator, as text,
	# so both ConfigMaps carry it byte for byte, comments included.
	[[ $part != policy-file ]] || args+=(--set-file "policy=$ROOT/config/policy-file/policy.yaml")
	# Helm applies crds/ before the templates and never templates it; the
	# component ships the CRD as a resource like any other.
	[[ $part != audit-report ]] || args+=(--include-crds)
	"$HELM" "${args[@]}" "$@"
}

# output PART NAME: where NAME (an OUTPUTS entry) of PART is written, relative
# to config/.
output() {
	local rel=${2##*/}.yaml
	[[ $1 == base ]] || rel=$1/$rel
	echo "$rel"
}

# render DIR: write every rendered file under DIR, laid out as config/.
render() {
	local dir=$1 part name src out
	for part in base "${COMPONENTS[@]}"; do
		for name in ${OUTPUTS[$part]-}; do
			src=templates/$name.yaml
			[[ $name != */* ]] || src=$name.yaml
			out=$dir/$(output "$part" "$name")
			mkdir -p "$(dirname "$out")"
			{
				echo "# Rendered by hack/render-config.sh from config/helm/imagegate/$src:"
				echo "# edit the chart and run the script; CI fails when this file differs."
				# helm's "---" and "# Source:" before each document, except the
				# separators between documents of the same file.
				template "$part" --show-only "$src" |
					awk 'NR == 1 && $0 == "---" { next } /^# Source: / { next } { print }'
			} >"$out"
		done
	done
}

# check_readme: every key of the chart's values.yaml has a row in the chart's
# README table (or the map holding it has, or its own keys have), and every
# row names a key.
check_readme() {
	local keys rows key k failed=0
	# The dotted path of every key of values.yaml, except keys of list items.
	keys=$(awk '
		/^[[:space:]]*(#|$)/ { next }
		{
			match($0, /^ */); n = RLENGTH
			for (d in last) if (d + 0 >= n) delete last[d]
			line = substr($0, n + 1)
			if (line ~ /^- /) { last[n] = "-"; next }
			if (!match(line, /^[A-Za-z0-9_.-]+:/)) next
			key = substr(line, 1, RLENGTH - 1); path = ""; ok = 1
			for (i = 0; i < n; i += 2) { if (!(i in last) || last[i] == "-") { ok = 0; break }; path = path last[i] "." }
			last[n] = key
			if (ok) print path key
		}
	' "$CHART/values.yaml")
	# shellcheck disable=SC2016 # the backquotes are Markdown's
	rows=$(sed -nE 's/^\| `([^`]+)` \|.*/\1/p' "$CHART_README")
	for key in $keys; do
		# A map is documented by the rows of its keys.
		[[ $'\n'$rows != *$'\n'"$key."* ]] || continue
		k=$key
		until grep -qxF -- "$k" <<<"$rows"; do
			[[ $k == *.* ]] || {
				echo "render-config: values.yaml key $key has no row in config/helm/imagegate/README.md" >&2
				failed=1
				break
			}
			k=${k%.*}
		done
	done
	for key in $rows; do
		grep -qxF -- "$key" <<<"$keys" || {
			echo "render-config: config/helm/imagegate/README.md documents $key, which values.yaml does not have" >&2
			failed=1
		}
	done
	return "$failed"
}

main() {
	HELM=${HELM:-$("$ROOT/hack/install-helm.sh")}
	case ${1-} in
	"")
		render "$ROOT/config"
		echo "render-config: config/ rendered from config/helm/imagegate" >&2
		;;
	--check)
		local part name rel failed=0
		TMP=$(mktemp -d)
		trap 'rm -rf "$TMP"' EXIT
		render "$TMP"
		for part in base "${COMPONENTS[@]}"; do
			for name in ${OUTPUTS[$part]-}; do
				rel=$(output "$part" "$name")
				diff -u "$ROOT/config/$rel" "$TMP/$rel" || failed=1
			done
		done
		check_readme || failed=1
		if ((failed)); then
			echo "render-config: config/ differs from the chart (run hack/render-config.sh), or the chart's README from its values" >&2
			exit 1
		fi
		echo "render-config: config/ is what config/helm/imagegate renders, and its README lists every value" >&2
		;;
	--template)
		shift
		template "${1:-base}" "${@:2}"
		;;
	*)
		echo "usage: hack/render-config.sh [--check | --template [base|COMPONENT] [HELM FLAG...]]" >&2
		exit 2
		;;
	esac
}

main "$@"

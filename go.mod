module github.com/imagegate/imagegate

go 1.26.0

require (
	github.com/distribution/reference v0.6.0 // indirect
	github.com/go-chi/chi/v5 v5.5.0 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/spf13/pflag v1.1.0 // indirect
	k8s.io/api v0.34.4 // indirect
)

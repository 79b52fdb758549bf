package certs

// SetReadFile replaces how the TLS files are read until the returned
// function restores it. Tests that use it must not run in parallel.
func SetReadFile(f func(string) ([]byte, error)) (restore func()) {
	old := readFile
	readFile = f
	return func() { readFile = old }
}

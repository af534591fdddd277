//go:build race

package sqlite_test

// slowdown is how much slower SQLite (C translated to Go) runs under the
// race detector, for tests that time it.
const slowdown = 8

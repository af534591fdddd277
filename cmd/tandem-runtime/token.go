package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/config"
)

// docList collects repeated --doc flags (comma-separated values allowed).
type docList []string

func (d *docList) String() string { return strings.Join(*d, ",") }
func (d *docList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*d = append(*d, p)
		}
	}
	return nil
}

// runToken mints a token with the configured key: for scripts and tests.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tandem-runtime token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("jwt-key-file", getenv("TANDEM_JWT_KEY_FILE"), "file holding the HS256 key (env TANDEM_JWT_KEY_FILE; TANDEM_JWT_KEY may hold the key itself)")
	sub := fs.String("sub", "", "user id (subject)")
	name := fs.String("name", "", "display name (default: the user id)")
	var docs docList
	fs.Var(&docs, "doc", `document id or prefix pattern ending in "*"; repeatable`)
	perm := fs.String("perm", "write", `"read", "write" or "admin" (admin: the admin API on the --doc documents, and editing them)`)
	ttl := fs.Duration("ttl", time.Hour, "validity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := &config.Config{JWTKeyFile: *keyFile, JWTKey: getenv("TANDEM_JWT_KEY")}
	key, err := cfg.Key()
	if err != nil {
		return err
	}
	tok, err := auth.Mint(key, auth.MintOptions{Subject: *sub, Name: *name, Docs: docs, Perm: auth.Perm(*perm), TTL: *ttl})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tandem-dev/tandem/internal/opbench"
)

// runOperator is `tandem-bench operator`: the operator scale run on kwok.
func runOperator(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		n          = fs.Int("n", 100, "CollabClusters applied at once")
		root       = fs.String("root", ".", "repository root (samples, CRDs, hack/e2e/kwok-cluster.sh)")
		manager    = fs.String("manager", "", "built operator binary (go build ./cmd/manager)")
		kubeconfig = fs.String("kubeconfig", "", "kubeconfig of a kwok cluster to use; empty creates and deletes one")
		unrelatedN = fs.Int("unrelated", 5000, "unrelated Secrets and Pods created before a last restart, for the operator's memory with them; 0 skips")
		timeout    = fs.Duration("ready-timeout", 30*time.Minute, "longest wait for every CollabCluster to be Ready")
		managerArg = fs.String("manager-args", "", "extra operator flags, space-separated")
		out        = fs.String("out", "", "write the result as JSON to this file")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *manager == "" {
		return errors.New("--manager is required")
	}
	// The harness's informers log through controller-runtime; their
	// messages are of no use in the report.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := opbench.Run(ctx, opbench.Config{
		N: *n, Root: *root, Manager: *manager, Kubeconfig: *kubeconfig, Unrelated: *unrelatedN,
		ReadyTimeout: *timeout, ManagerArgs: strings.Fields(*managerArg), Log: stderr,
	})
	if err != nil {
		return err
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if *out != "" {
		if err := os.WriteFile(*out, append(raw, '\n'), 0o644); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "%s\n", raw)
	return err
}

// operatorReport is `tandem-bench operator-report a.json b.json ...`: the
// markdown section of docs/benchmarks.md for the runs.
func operatorReport(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("operator-report needs the JSON files of one or more runs")
	}
	var runs []*opbench.Result
	for _, f := range args {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		r := &opbench.Result{}
		if err := json.Unmarshal(raw, r); err != nil {
			return fmt.Errorf("decode %s: %w", f, err)
		}
		runs = append(runs, r)
	}
	return opbench.Markdown(stdout, runs)
}

// Command tandem-bench drives running tandem-runtime processes through the
// document WebSocket protocol and reports latency, throughput, memory and
// persistence costs (scenarios S1-S5 of docs/benchmarks.md).
//
//	tandem-bench run --replicas http://127.0.0.1:8081,http://127.0.0.1:8082 \
//	    --single http://127.0.0.1:8083 --idle http://127.0.0.1:8084 \
//	    --postgres-url postgres://... [--json] [--out results.json] \
//	    [--profile-dir DIR --debug A=http://127.0.0.1:6061,B=...,single=...,idle=...]
//	tandem-bench report --results results.json --gobench micro.txt \
//	    --benchstat benchstat.txt --out docs/benchmarks.md
//	tandem-bench freeport
//
// Every scenario ends by itself and verifies that all clients converged on
// the server's text and that every submitted operation was acknowledged;
// a scenario that does not verify is reported as failed and the command
// exits non-zero.
//
// With --profile-dir, the first run also fetches pprof profiles from the
// runtimes' debug listeners (tandem-runtime --debug-addr, named in --debug):
// a CPU profile of every runtime S1, S1-spread, S1-colocated, S2,
// S2-colocated, S2-single and S4 drive, taken
// while the scenario runs (<scenario>-<name>.cpu.pprof), and a heap
// profile of the idle runtime with S3's connections open (S3-idle.heap.pprof).
// A profile that cannot be fetched is a warning, not a failed scenario.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-dev/tandem/internal/bench"
	"github.com/tandem-dev/tandem/runtime/auth"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tandem-bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runScenarios(args, stdout, stderr)
	case "report":
		return writeReport(args, stderr)
	case "operator":
		return runOperator(args, stdout, stderr)
	case "operator-report":
		return operatorReport(args, stdout)
	case "freeport":
		// For hack/bench.sh: a free loopback port to start a service on.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		_, err = fmt.Fprintln(stdout, l.Addr().(*net.TCPAddr).Port)
		return err
	default:
		return fmt.Errorf("unknown command %q (want run, report, operator, operator-report or freeport)", cmd)
	}
}

// allScenarios in the order they run. S5 is measured during S2 when a
// PostgreSQL URL is given. S1-spread, S1-colocated and S2-colocated are S1
// and S2 across the replicas with another placement of the clients: spread
// evenly (no stickiness) or all on replica A (stickiness by document).
var allScenarios = []string{"S3", "S1", "S1-spread", "S1-colocated", "S1-single", "S2", "S2-colocated", "S2-single", "S4"}

func runScenarios(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		replicas   = fs.String("replicas", "", "comma-separated base URLs of the replicas sharing Redis and PostgreSQL (S1, S2, S4)")
		single     = fs.String("single", "", "base URL of a runtime in embedded mode (S1-single, S2-single)")
		idle       = fs.String("idle", "", "base URL of a fresh runtime for S3 (default: --single, else the first replica)")
		pgURL      = fs.String("postgres-url", "", "PostgreSQL the replicas write to; enables S5 during S2")
		keyFile    = fs.String("jwt-key-file", "", "HS256 key file of the runtimes; empty: they run with --auth=anonymous")
		scenarios  = fs.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma-separated")
		runs       = fs.Int("runs", 1, "runs of each scenario, medians reported (S3 runs once: it needs a fresh runtime)")
		asJSON     = fs.Bool("json", false, "print the report as JSON instead of a table")
		out        = fs.String("out", "", "also write the JSON report to this file")
		seed       = fs.Uint64("seed", 0, "seed of the random edit positions (0: random)")
		settle     = fs.Duration("settle", 30*time.Second, "longest wait for acks and convergence after the load stops")
		s1Dur      = fs.Duration("s1-duration", 10*time.Second, "S1: how long the writer types")
		s1Interval = fs.Duration("s1-interval", 10*time.Millisecond, "S1: time between the writer's characters")
		s1Readers  = fs.Int("s1-readers", 10, "S1: readers")
		s2Dur      = fs.Duration("s2-duration", 15*time.Second, "S2: duration of the closed loop")
		s2Writers  = fs.Int("s2-writers", 20, "S2: writers (spread over the replicas)")
		s3Conns    = fs.Int("s3-conns", 2000, "S3: idle connections")
		s3Docs     = fs.Int("s3-docs", 100, "S3: documents they are spread over")
		s3Idle     = fs.Duration("s3-idle", 10*time.Second, "S3: how long idle CPU is measured")
		s4Docs     = fs.Int("s4-docs", 1000, "S4: documents")
		s4Editors  = fs.Int("s4-editors", 5, "S4: editors per document")
		s4Rate     = fs.Float64("s4-rate", 2, "S4: characters per second per editor")
		s4Dur      = fs.Duration("s4-duration", 30*time.Second, "S4: duration")
		profileDir = fs.String("profile-dir", "", "write pprof profiles of the runtimes, taken during the first run, into this directory (needs --debug)")
		debug      = fs.String("debug", "", "comma-separated name=URL of the runtimes' --debug-addr listeners, names "+strings.Join(runtimeNames, ", ")+" (with --profile-dir)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *runs < 1 {
		return errors.New("--runs must be at least 1")
	}
	var prof *profiler
	switch {
	case *profileDir != "" && *debug == "":
		return errors.New("--profile-dir needs --debug")
	case *profileDir == "" && *debug != "":
		return errors.New("--debug is only used with --profile-dir")
	case *profileDir != "":
		urls, err := parseDebug(*debug)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(*profileDir, 0o755); err != nil {
			return fmt.Errorf("create profile directory: %w", err)
		}
		prof = &profiler{dir: *profileDir, debug: urls, stderr: stderr}
	}
	raiseFileLimit(stderr)

	var tokens func(doc string) (string, error)
	if *keyFile != "" {
		key, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("read JWT key: %w", err)
		}
		key = []byte(strings.TrimSpace(string(key)))
		tokens = func(doc string) (string, error) {
			return auth.Mint(key, auth.MintOptions{Subject: "bench", Name: "bench", Docs: []string{doc}, Perm: auth.PermWrite, TTL: time.Hour})
		}
	}
	split := func(s string) []string {
		var out []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, strings.TrimRight(p, "/"))
			}
		}
		return out
	}
	repl := split(*replicas)
	idleURL := *idle
	if idleURL == "" {
		idleURL = *single
	}
	if idleURL == "" && len(repl) > 0 {
		idleURL = repl[0]
	}
	envFor := func(urls ...string) *bench.Env {
		return &bench.Env{Replicas: urls, Token: tokens, Settle: *settle, Seed: *seed}
	}
	var probe *bench.PGProbe
	if *pgURL != "" {
		probe = &bench.PGProbe{URL: *pgURL}
	}

	type job struct {
		id  string
		run func(ctx context.Context) []bench.Result
		// With --profile-dir, the first run takes CPU profiles of the
		// runtimes named in cpuOf for about load, the scenario's load
		// duration.
		cpuOf []string
		load  time.Duration
	}
	var jobs []job
	for _, id := range split(*scenarios) {
		switch id {
		case "S1":
			if len(repl) < 2 {
				return errors.New("S1 needs two --replicas")
			}
			jobs = append(jobs, job{id: id, run: func(ctx context.Context) []bench.Result {
				return []bench.Result{bench.S1(ctx, envFor(repl...), bench.S1Options{Duration: *s1Dur, Interval: *s1Interval, Readers: *s1Readers})}
			}, cpuOf: []string{"A", "B"}, load: *s1Dur})
		case "S1-spread", "S1-colocated":
			if len(repl) < 2 {
				return fmt.Errorf("%s needs two --replicas", id)
			}
			place := bench.PlaceSpread
			if id == "S1-colocated" {
				place = bench.PlaceColocated
			}
			jobs = append(jobs, job{id: id, run: func(ctx context.Context) []bench.Result {
				return []bench.Result{bench.S1(ctx, envFor(repl...), bench.S1Options{Duration: *s1Dur, Interval: *s1Interval, Readers: *s1Readers, Placement: place})}
			}, cpuOf: []string{"A", "B"}, load: *s1Dur})
		case "S2-colocated":
			if len(repl) < 2 {
				return errors.New("S2-colocated needs two --replicas")
			}
			jobs = append(jobs, job{id: id, run: func(ctx context.Context) []bench.Result {
				r, _ := bench.S2(ctx, envFor(repl...), bench.S2Options{Duration: *s2Dur, Writers: *s2Writers, Placement: bench.PlaceColocated})
				return []bench.Result{r}
			}, cpuOf: []string{"A", "B"}, load: *s2Dur})
		case "S1-single":
			if *single == "" {
				return errors.New("S1-single needs --single")
			}
			jobs = append(jobs, job{id: id, run: func(ctx context.Context) []bench.Result {
				return []bench.Result{bench.S1(ctx, envFor(*single), bench.S1Options{Duration: *s1Dur, Interval: *s1Interval, Readers: *s1Readers, Single: true})}
			}})
		case "S2":
			if len(repl) < 2 {
				return errors.New("S2 needs two --replicas")
			}
			jobs = append(jobs, job{id: id, run: func(ctx context.Context) []bench.Result {
				r, s5 := bench.S2(ctx, envFor(repl...), bench.S2Options{Duration: *s2Dur, Writers: *s2Writers, Persistence: probe})
				if s5 != nil {
					return []bench.Result{r, *s5}
				}
				return []bench.Result{r}
			}, cpuOf: []string{"A", "B"}, load: *s2Dur})
		case "S2-single":
			if *single == "" {
				return errors.New("S2-single needs --single")
			}
			jobs = append(jobs, job{id: id, run: func(ctx context.Context) []bench.Result {
				r, _ := bench.S2(ctx, envFor(*single), bench.S2Options{Duration: *s2Dur, Writers: *s2Writers, Single: true})
				return []bench.Result{r}
			}, cpuOf: []string{"single"}, load: *s2Dur})
		case "S3":
			if idleURL == "" {
				return errors.New("S3 needs --idle, --single or --replicas")
			}
			jobs = append(jobs, job{id: id, run: func(ctx context.Context) []bench.Result {
				o := bench.S3Options{Conns: *s3Conns, Docs: *s3Docs, Idle: *s3Idle}
				if prof != nil {
					// S3 runs only once, so this is the first run.
					o.OnIdle = func(ctx context.Context) { prof.heap(ctx, "S3", "idle") }
				}
				return []bench.Result{bench.S3(ctx, envFor(idleURL), o)}
			}})
		case "S4":
			if len(repl) == 0 {
				return errors.New("S4 needs --replicas")
			}
			jobs = append(jobs, job{id: id, run: func(ctx context.Context) []bench.Result {
				return []bench.Result{bench.S4(ctx, envFor(repl...), bench.S4Options{Docs: *s4Docs, Editors: *s4Editors, Rate: *s4Rate, Duration: *s4Dur})}
			}, cpuOf: []string{"A", "B"}, load: *s4Dur})
		default:
			return fmt.Errorf("unknown scenario %q (known: %s)", id, strings.Join(allScenarios, ", "))
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := bench.Report{Machine: bench.DetectMachine()}
	for i := range *runs {
		var results []bench.Result
		for _, j := range jobs {
			if j.id == "S3" && i > 0 {
				// S3's baseline must be a process that has served nothing:
				// later runs would measure against the first one's leftovers.
				continue
			}
			fmt.Fprintf(stderr, "run %d/%d: %s ...\n", i+1, *runs, j.id)
			// Profiling slows the runtimes a little: only the first run
			// pays for it, and the medians of several runs absorb it.
			waitProfiles := func() {}
			if prof != nil && i == 0 && len(j.cpuOf) > 0 {
				waitProfiles = prof.cpu(ctx, j.id, j.load, j.cpuOf)
			}
			rs := j.run(ctx)
			// The next scenario's profiles must not overlap this one's.
			waitProfiles()
			for _, r := range rs {
				if r.Error != "" {
					fmt.Fprintf(stderr, "run %d/%d: %s FAILED: %s\n", i+1, *runs, r.ID, r.Error)
				}
				results = append(results, r)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		rep.Runs = append(rep.Runs, results)
	}
	rep.Median = bench.Medians(rep.Runs)
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if *out != "" {
		if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if *asJSON {
		if _, err := stdout.Write(append(data, '\n')); err != nil {
			return err
		}
	} else if err := bench.WriteTable(stdout, rep.Median); err != nil {
		return err
	}
	var failed []string
	for _, r := range rep.Median {
		if r.Error != "" {
			failed = append(failed, r.ID)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed verification: %s", strings.Join(failed, ", "))
	}
	return nil
}

// runtimeNames are the names --debug knows the runtimes by: the replicas
// (first and second of --replicas), --single and the runtime S3 uses.
var runtimeNames = []string{"A", "B", "single", "idle"}

// parseDebug reads --debug: comma-separated name=URL pairs.
func parseDebug(s string) (map[string]string, error) {
	urls := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		name, u, ok := strings.Cut(p, "=")
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if !ok || u == "" {
			return nil, fmt.Errorf("--debug: %q is not name=URL", p)
		}
		name = strings.TrimSpace(name)
		if !slices.Contains(runtimeNames, name) {
			return nil, fmt.Errorf("--debug: unknown runtime %q (known: %s)", name, strings.Join(runtimeNames, ", "))
		}
		if _, dup := urls[name]; dup {
			return nil, fmt.Errorf("--debug: %s given twice", name)
		}
		urls[name] = u
	}
	if len(urls) == 0 {
		return nil, errors.New("--debug names no runtime")
	}
	return urls, nil
}

// profiler fetches the runtimes' profiles into dir. A profile that cannot
// be fetched is a warning: the scenario's figures do not depend on it.
type profiler struct {
	dir    string
	debug  map[string]string // runtime name -> debug listener base URL
	stderr io.Writer
}

func (p *profiler) file(scenario, name, kind string) string {
	return filepath.Join(p.dir, scenario+"-"+name+"."+kind+".pprof")
}

// cpu starts CPU profiles of about d of the named runtimes; wait blocks
// until they are written and warns about those that were not.
func (p *profiler) cpu(ctx context.Context, scenario string, d time.Duration, names []string) (wait func()) {
	var ps []bench.Profile
	for _, n := range names {
		base, ok := p.debug[n]
		if !ok {
			fmt.Fprintf(p.stderr, "warning: no --debug URL for %s: no %s CPU profile of it\n", n, scenario)
			continue
		}
		ps = append(ps, bench.CPUProfile(base, d, p.file(scenario, n, "cpu")))
	}
	fetched := bench.StartProfiles(ctx, ps)
	return func() {
		for _, err := range fetched() {
			fmt.Fprintf(p.stderr, "warning: %s: %v\n", scenario, err)
		}
	}
}

// heap writes a heap profile of the named runtime.
func (p *profiler) heap(ctx context.Context, scenario, name string) {
	base, ok := p.debug[name]
	if !ok {
		fmt.Fprintf(p.stderr, "warning: no --debug URL for %s: no %s heap profile of it\n", name, scenario)
		return
	}
	if err := bench.FetchProfile(ctx, bench.HeapProfile(base, p.file(scenario, name, "heap"))); err != nil {
		fmt.Fprintf(p.stderr, "warning: %s: %v\n", scenario, err)
	}
}

// raiseFileLimit lifts the soft open-files limit to the hard one: S3 and
// S4 hold thousands of sockets.
func raiseFileLimit(stderr io.Writer) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintf(stderr, "warning: cannot raise the open-files limit: %v\n", err)
		}
	}
}

func writeReport(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		results   = fs.String("results", "", "JSON report written by `tandem-bench run --out` (required)")
		gobench   = fs.String("gobench", "", "raw `go test -bench` output")
		benchstat = fs.String("benchstat", "", "benchstat output over the micro-benchmark runs")
		setup     = fs.String("setup", "", "markdown file describing how the runtimes were started")
		notes     = fs.String("notes", "", "markdown file with the closing note")
		storage   = fs.String("storage", "", "raw `go test -bench` output of the storage benchmarks (BenchmarkStorage*)")
		out       = fs.String("out", "docs/benchmarks.md", "where to write the document")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *results == "" {
		return errors.New("report needs --results")
	}
	data, err := os.ReadFile(*results)
	if err != nil {
		return fmt.Errorf("read results: %w", err)
	}
	var in bench.MarkdownInput
	if err := json.Unmarshal(data, &in.Report); err != nil {
		return fmt.Errorf("decode results %s: %w", *results, err)
	}
	readOpt := func(path string) (string, error) {
		if path == "" {
			return "", nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		return string(b), nil
	}
	if in.Benchstat, err = readOpt(*benchstat); err != nil {
		return err
	}
	if in.Setup, err = readOpt(*setup); err != nil {
		return err
	}
	if in.Notes, err = readOpt(*notes); err != nil {
		return err
	}
	if *gobench != "" {
		f, err := os.Open(*gobench)
		if err != nil {
			return fmt.Errorf("read go benchmarks: %w", err)
		}
		in.GoBench, err = bench.ParseGoBench(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	if *storage != "" {
		f, err := os.Open(*storage)
		if err != nil {
			return fmt.Errorf("read storage benchmarks: %w", err)
		}
		in.Storage, err = bench.ParseBenchMetrics(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	f, err := os.Create(*out)
	if err != nil {
		return fmt.Errorf("create %s: %w", *out, err)
	}
	if err := bench.WriteMarkdown(f, in); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", *out, err)
	}
	return f.Close()
}

package opbench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// apiCounts are the operator's requests so far, from its
// tandem_operator_kube_api_requests_total.
type apiCounts struct {
	Requests int
	Writes   int
	// Reviews are SelfSubjectAccessReviews: created once at start to learn
	// what the operator may watch, they change nothing.
	Reviews int
}

func (a apiCounts) sub(b apiCounts) apiCounts {
	return apiCounts{Requests: a.Requests - b.Requests, Writes: a.Writes - b.Writes, Reviews: a.Reviews - b.Reviews}
}

var writeVerbs = map[string]bool{"create": true, "update": true, "patch": true, "apply": true, "delete": true, "deletecollection": true}

// scrape reads the operator's metrics endpoint.
func scrape(ctx context.Context, url string) (map[string]*dtoFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// dtoFamily is one metric family as samples: labels and value.
type dtoFamily struct {
	samples []sample
}

type sample struct {
	labels map[string]string
	value  float64
}

func parseMetrics(r io.Reader) (map[string]*dtoFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	out := map[string]*dtoFamily{}
	for name, f := range fams {
		df := &dtoFamily{}
		for _, m := range f.GetMetric() {
			s := sample{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.value = m.GetGauge().GetValue()
			case m.Untyped != nil:
				s.value = m.GetUntyped().GetValue()
			default:
				continue
			}
			df.samples = append(df.samples, s)
		}
		out[name] = df
	}
	return out, nil
}

// sum adds the samples of a family whose labels include match.
func sum(fams map[string]*dtoFamily, name string, match map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	total := 0.0
next:
	for _, s := range f.samples {
		for k, v := range match {
			if s.labels[k] != v {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// countsOf reads the operator's request counter.
func countsOf(fams map[string]*dtoFamily) apiCounts {
	var c apiCounts
	f := fams["tandem_operator_kube_api_requests_total"]
	if f == nil {
		return c
	}
	for _, s := range f.samples {
		n := int(s.value)
		c.Requests += n
		if !writeVerbs[s.labels["verb"]] {
			continue
		}
		if strings.HasSuffix(s.labels["resource"], "selfsubjectaccessreviews") {
			c.Reviews += n
			continue
		}
		c.Writes += n
	}
	return c
}

// byKind reads the operator's request counter per verb and resource, as
// "verb resource" (for example "apply apps/deployments"), to tell which
// requests a figure is made of.
func byKind(fams map[string]*dtoFamily) map[string]int {
	out := map[string]int{}
	f := fams["tandem_operator_kube_api_requests_total"]
	if f == nil {
		return out
	}
	for _, s := range f.samples {
		out[s.labels["verb"]+" "+s.labels["resource"]] += int(s.value)
	}
	return out
}

// subKinds is a minus b, without the kinds that did not change.
func subKinds(a, b map[string]int) map[string]int {
	out := map[string]int{}
	for k, n := range a {
		if d := n - b[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// procStats are a process's peak resident memory and CPU time so far.
type procStats struct {
	PeakRSSBytes int64
	CPU          time.Duration
}

// readProc reads VmHWM from /proc/<pid>/status and utime+stime from
// /proc/<pid>/stat.
func readProc(pid int) (procStats, error) {
	var st procStats
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kb, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			if err != nil {
				return st, fmt.Errorf("parse VmHWM %q: %w", kb, err)
			}
			st.PeakRSSBytes = n * 1024
		}
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	cpu, err := parseStatCPU(string(raw))
	if err != nil {
		return st, err
	}
	st.CPU = cpu
	return st, nil
}

// clockTicks is USER_HZ, 100 on every Linux the project runs on.
const clockTicks = 100

// parseStatCPU reads utime and stime (fields 14 and 15) of /proc/pid/stat;
// the command name in parentheses may hold spaces, so fields are counted
// after its closing parenthesis.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	fields := strings.Fields(stat[i+1:])
	// fields[0] is field 3 (state); utime is field 14.
	if len(fields) < 13 {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse utime: %w", err)
	}
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stime: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

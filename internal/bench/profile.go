package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// profileSlack is how long a profile request may take beyond the time the
// profile itself covers: a loaded runtime can be slow to answer, but a
// hung one must not hold up the next scenario for ever.
const profileSlack = 30 * time.Second

// Profile is one pprof profile to fetch from a runtime's debug listener
// (tandem-runtime --debug-addr).
type Profile struct {
	URL  string // the profile's full URL
	File string // where to write it
	// Timeout bounds the whole request, including the seconds a CPU
	// profile samples for (0: only the caller's context).
	Timeout time.Duration
}

// CPUProfile is a CPU profile of about d (whole seconds, at least one)
// from the debug listener at base.
func CPUProfile(base string, d time.Duration, file string) Profile {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	return Profile{
		URL:     fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimRight(base, "/"), secs),
		File:    file,
		Timeout: time.Duration(secs)*time.Second + profileSlack,
	}
}

// HeapProfile is a heap profile from the debug listener at base, taken
// after a collection so it shows what is live rather than garbage.
func HeapProfile(base, file string) Profile {
	return Profile{URL: strings.TrimRight(base, "/") + "/debug/pprof/heap?gc=1", File: file, Timeout: profileSlack}
}

// FetchProfile writes the profile at p.URL to p.File. A failed fetch
// leaves no file behind, so what is in the directory can be trusted.
func FetchProfile(ctx context.Context, p Profile) error {
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return fmt.Errorf("profile request %s: %w", p.URL, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch profile %s: %w", p.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// net/http/pprof explains itself in the body, e.g. "cpu profiling
		// already in use".
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetch profile %s: HTTP %d: %s", p.URL, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.File), "."+filepath.Base(p.File)+".*")
	if err != nil {
		return fmt.Errorf("create profile file for %s: %w", p.URL, err)
	}
	// CreateTemp's 0600 would make the profiles private to whoever ran
	// the benchmark; they are results like the report.
	err = tmp.Chmod(0o644)
	var n int64
	if err == nil {
		n, err = io.Copy(tmp, resp.Body)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && n == 0 {
		err = errors.New("empty response")
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p.File)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write profile %s to %s: %w", p.URL, p.File, err)
	}
	return nil
}

// StartProfiles fetches every profile concurrently, so they cover the same
// stretch of a scenario. wait blocks until all fetches have ended and
// returns the errors of those that failed.
func StartProfiles(ctx context.Context, ps []Profile) (wait func() []error) {
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = FetchProfile(ctx, p)
		}()
	}
	return func() []error {
		wg.Wait()
		var failed []error
		for _, err := range errs {
			if err != nil {
				failed = append(failed, err)
			}
		}
		return failed
	}
}

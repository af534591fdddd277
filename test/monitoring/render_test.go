package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tandem-dev/tandem/test/testtools"
)

// The dashboard rendered from its JSON against the test's Prometheus: each
// panel at its gridPos, each target a line from a range query, legends
// from legendFormat. It is not Grafana, but it draws exactly the queries
// Grafana would run, with real data, so a person can see what the panels
// show. Written to artifacts/dashboard.png (ARTIFACTS_DIR), and to
// docs/images/dashboard.png when TANDEM_UPDATE_DOCS_IMAGES=1.
func renderDashboard(ctx context.Context, t *testing.T, prom *promAPI, file string, since time.Time) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string                   `json:"title"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Field   struct {
				Defaults struct {
					Unit string `json:"unit"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct {
				Expr   string `json:"expr"`
				Legend string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$namespace", ccNamespace, "$collabcluster", ccName, "$__rate_interval", "10s")
	end := time.Now()
	const colW, rowH = 40, 30 // pixels per grid unit
	var b strings.Builder
	fmt.Fprintf(&b, `<!doctype html><html><head><meta charset="utf-8"><style>
body{margin:0;background:#111217;font:12px sans-serif;color:#ccccdc}
h1{font-size:16px;font-weight:500;margin:10px 12px}
.p{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;box-sizing:border-box;padding:6px 8px}
.p h2{font-size:12px;font-weight:500;margin:0 0 4px}
.lg{font-size:10px;line-height:13px}
</style></head><body><h1>%s · %s/%s</h1>`, html.EscapeString(dash.Title), ccNamespace, ccName)
	palette := []string{"#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"}
	for _, p := range dash.Panels {
		type line struct {
			name   string
			points [][2]float64
		}
		var lines []line
		for _, target := range p.Targets {
			series, err := prom.queryRange(ctx, vars.Replace(target.Expr), since, end, 2*time.Second)
			if err != nil {
				t.Fatalf("panel %q: %v", p.Title, err)
			}
			for _, s := range series {
				name := target.Legend
				for k, v := range s.labels {
					name = strings.ReplaceAll(name, "{{"+k+"}}", v)
				}
				lines = append(lines, line{name: name, points: s.points})
			}
		}
		sort.SliceStable(lines, func(i, j int) bool { return lines[i].name < lines[j].name })
		w, h := p.GridPos.W*colW, p.GridPos.H*rowH
		left, top := p.GridPos.X*colW+4, p.GridPos.Y*rowH+40
		plotW, plotH := float64(w-70), float64(h-80)
		maxV := 0.0
		for _, l := range lines {
			for _, pt := range l.points {
				maxV = math.Max(maxV, pt[1])
			}
		}
		if maxV == 0 {
			maxV = 1
		}
		fmt.Fprintf(&b, `<div class="p" style="left:%dpx;top:%dpx;width:%dpx;height:%dpx"><h2>%s</h2><svg width="%d" height="%d">`,
			left, top, w-8, h-8, html.EscapeString(p.Title), w-20, int(plotH)+16)
		for i := 0; i <= 2; i++ {
			y := 4 + plotH*float64(i)/2
			fmt.Fprintf(&b, `<line x1="52" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#2c3235"/><text x="48" y="%.1f" fill="#8e8e8e" font-size="9" text-anchor="end">%s</text>`,
				52+plotW, y, y, y+3, formatValue(maxV*float64(2-i)/2, p.Field.Defaults.Unit))
		}
		span := end.Sub(since).Seconds()
		for i, l := range lines {
			var pts []string
			for _, pt := range l.points {
				x := 52 + plotW*(pt[0]-float64(since.Unix()))/span
				y := 4 + plotH*(1-pt[1]/maxV)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, palette[i%len(palette)], strings.Join(pts, " "))
		}
		b.WriteString(`</svg><div class="lg">`)
		for i, l := range lines {
			if i == 6 {
				fmt.Fprintf(&b, " … %d more", len(lines)-6)
				break
			}
			fmt.Fprintf(&b, `<span style="color:%s">━</span> %s &nbsp;`, palette[i%len(palette)], html.EscapeString(l.name))
		}
		b.WriteString(`</div></div>`)
	}
	b.WriteString(`</body></html>`)

	page := filepath.Join(t.TempDir(), "dashboard.html")
	if err := os.WriteFile(page, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	shot := screenshot(t, "file://"+page)
	out := artifact(t, "dashboard.png", shot)
	t.Logf("dashboard rendered: %s", out)
	if os.Getenv("TANDEM_UPDATE_DOCS_IMAGES") == "1" {
		if err := os.WriteFile(filepath.Join(testtools.RepoRoot(t), "docs", "images", "dashboard.png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "s":
		if v < 1 && v > 0 {
			return strconv.FormatFloat(v*1000, 'f', 1, 64) + " ms"
		}
		return strconv.FormatFloat(v, 'f', 1, 64) + " s"
	case "bytes":
		return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + " MiB"
	case "percentunit":
		return strconv.FormatFloat(v*100, 'f', 1, 64) + "%"
	case "ops":
		return strconv.FormatFloat(v, 'f', 1, 64) + "/s"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

type rangeSeries struct {
	labels map[string]string
	points [][2]float64
}

func (p *promAPI) queryRange(ctx context.Context, q string, start, end time.Time, step time.Duration) ([]rangeSeries, error) {
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	path := fmt.Sprintf("/api/v1/query_range?query=%s&start=%d&end=%d&step=%s", url.QueryEscape(q), start.Unix(), end.Unix(), step)
	if err := p.get(ctx, path, &data); err != nil {
		return nil, err
	}
	var out []rangeSeries
	for _, r := range data.Result {
		s := rangeSeries{labels: r.Metric}
		for _, v := range r.Values {
			ts, _ := v[0].(float64)
			str, _ := v[1].(string)
			f, err := strconv.ParseFloat(str, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				continue
			}
			s.points = append(s.points, [2]float64{ts, f})
		}
		out = append(out, s)
	}
	return out, nil
}

// screenshot loads page in a headless Chromium and returns a PNG of it.
func screenshot(t *testing.T, page string) []byte {
	t.Helper()
	execPath := os.Getenv("TANDEM_CHROMIUM")
	if execPath == "" {
		execPath = "/usr/bin/chromium"
	}
	if _, err := os.Stat(execPath); err != nil {
		t.Fatalf("chromium not found at %s: apt-get install -y chromium (or set TANDEM_CHROMIUM)", execPath)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(execPath), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("no-first-run", true),
		chromedp.WindowSize(1000, 1260))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, time.Minute)
	defer cancelT()
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("open rendered dashboard: %v", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return shot
}

// artifact writes b under $ARTIFACTS_DIR (default artifacts/ at the
// repository root) and returns its path.
func artifact(t *testing.T, name string, b []byte) string {
	t.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(testtools.RepoRoot(t), "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

package main

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// transportColors keeps each transport's colour the same in every panel.
var transportColors = map[string]color.Color{
	transportRaftbus:  color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	transportRafthttp: color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	transportNATS3:    color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	transportXInline:  color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	transportEmbedded: color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	"bus":             color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"raw":             color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

// writePlot draws, one panel under the other: the latency distribution of
// every transport and client count, committed throughput per client count,
// and (when measured) bus vs raw NATS messages per second.
func writePlot(path string, rep *report) error {
	var rows [][]*plot.Plot
	if len(rep.Summary) > 0 {
		lat, err := latencyPlot(rep.Summary)
		if err != nil {
			return err
		}
		tput, err := throughputPlot(rep.Runs, rep.Summary)
		if err != nil {
			return err
		}
		rows = append(rows, []*plot.Plot{lat}, []*plot.Plot{tput})
	}
	if len(rep.BusSum) > 0 {
		bp, err := busPlot(rep.BusSum)
		if err != nil {
			return err
		}
		rows = append(rows, []*plot.Plot{bp})
	}
	if len(rows) == 0 {
		return fmt.Errorf("nothing was measured")
	}
	w, h := 18*vg.Centimeter, vg.Length(len(rows))*11*vg.Centimeter
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	canvases := plot.Align(rows, tiles, dc)
	for i := range rows {
		rows[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// nines maps a percentile to -log10(1-q): 50% -> 0.3, 90% -> 1, 99% -> 2,
// 99.9% -> 3, so the tail gets room.
func nines(q float64) float64 { return -math.Log10(1 - q/100) }

func latencyPlot(sums []*clusterSummary) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Write latency, proposal to applied on the leader (all rounds)"
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms, log)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Tick.Marker = plot.ConstantTicks{
		{Value: nines(0), Label: "0%"}, {Value: nines(50), Label: "50%"}, {Value: nines(90), Label: "90%"},
		{Value: nines(99), Label: "99%"}, {Value: nines(99.9), Label: "99.9%"}, {Value: nines(99.99), Label: "99.99%"},
	}
	// Bottom right (the far tail at low latency) is the only empty corner.
	p.Legend.Top = false
	p.Legend.Left = false
	clientIdx := map[int]int{}
	for _, s := range sums {
		if _, ok := clientIdx[s.Clients]; !ok {
			clientIdx[s.Clients] = len(clientIdx)
		}
	}
	for _, s := range sums {
		if s.lat == nil || s.lat.TotalCount() == 0 {
			continue
		}
		var xys plotter.XYs
		for x := 0.0; x <= 4.0001; x += 0.02 {
			q := 100 * (1 - math.Pow(10, -x))
			// ValueAtQuantile(0) is 0, which a log axis cannot show.
			v := float64(max(s.lat.ValueAtQuantile(q), s.lat.Min(), 1)) / 1000
			xys = append(xys, plotter.XY{X: x, Y: v})
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color = transportColors[s.Transport]
		l.Width = vg.Points(1.5)
		l.Dashes = clientDashes(clientIdx[s.Clients])
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s, %d clients", s.Transport, s.Clients), l)
	}
	p.Add(plotter.NewGrid())
	return p, nil
}

func clientDashes(i int) []vg.Length {
	switch i % 4 {
	case 0:
		return nil
	case 1:
		return []vg.Length{vg.Points(6), vg.Points(3)}
	case 2:
		return []vg.Length{vg.Points(2), vg.Points(2)}
	default:
		return []vg.Length{vg.Points(8), vg.Points(2), vg.Points(2), vg.Points(2)}
	}
}

func throughputPlot(runs []*clusterRun, sums []*clusterSummary) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Committed writes/s per client count (line: median, dots: rounds)"
	p.X.Label.Text = "concurrent clients (log)"
	p.Y.Label.Text = "commits/s"
	p.X.Scale = plot.LogScale{}
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	var ticks plot.ConstantTicks
	seen := map[int]bool{}
	order := []string{}
	byTr := map[string]plotter.XYs{}
	for _, s := range sums {
		if !seen[s.Clients] {
			seen[s.Clients] = true
			ticks = append(ticks, plot.Tick{Value: float64(s.Clients), Label: fmt.Sprint(s.Clients)})
		}
		if _, ok := byTr[s.Transport]; !ok {
			order = append(order, s.Transport)
		}
		byTr[s.Transport] = append(byTr[s.Transport], plotter.XY{X: float64(s.Clients), Y: s.CommitsPerSec})
	}
	p.X.Tick.Marker = ticks
	for _, tr := range order {
		l, pts, err := plotter.NewLinePoints(byTr[tr])
		if err != nil {
			return nil, err
		}
		l.Color, pts.Color = transportColors[tr], transportColors[tr]
		l.Width = vg.Points(1.5)
		p.Add(l, pts)
		p.Legend.Add(tr, l, pts)
		var rounds plotter.XYs
		for _, r := range runs {
			if r.Transport != tr {
				continue
			}
			for _, st := range r.Steps {
				rounds = append(rounds, plotter.XY{X: float64(st.Clients), Y: st.CommitsPerSec})
			}
		}
		if len(rounds) > 0 {
			sc, err := plotter.NewScatter(rounds)
			if err != nil {
				return nil, err
			}
			sc.Color = transportColors[tr]
			sc.Shape = draw.CircleGlyph{}
			sc.Radius = vg.Points(2)
			p.Add(sc)
		}
	}
	p.Add(plotter.NewGrid())
	return p, nil
}

func busPlot(bs []busSummary) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "natsbus vs raw NATS, Raft MsgApp envelopes (median; label: bus/raw msgs/s)"
	p.Y.Label.Text = "MB/s delivered"
	var bus, raw plotter.Values
	var names []string
	for _, b := range bs {
		// MB/s rather than msgs/s keeps all sizes on one readable scale;
		// both sides carry the same payloads, so the ratio is the same.
		bus = append(bus, b.BusMBPerSec)
		raw = append(raw, b.RawMBPerSec)
		names = append(names, fmt.Sprintf("%d B entry: x%.2f", b.EntrySize, b.Ratio))
	}
	w := vg.Points(28)
	bb, err := plotter.NewBarChart(bus, w)
	if err != nil {
		return nil, err
	}
	bb.Color, bb.Offset = transportColors["bus"], -w/2
	rb, err := plotter.NewBarChart(raw, w)
	if err != nil {
		return nil, err
	}
	rb.Color, rb.Offset = transportColors["raw"], w/2
	p.Add(bb, rb)
	p.Legend.Add("natsbus", bb)
	p.Legend.Add("raw nats.go", rb)
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(names...)
	return p, nil
}

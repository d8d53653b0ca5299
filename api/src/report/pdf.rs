//! A [`Report`] as a PDF: A4 pages, text in the standard Helvetica faces
//! (every PDF reader has them, nothing to embed), charts drawn as vector
//! paths, tables that continue onto new pages with their header repeated,
//! and "page N of M" footers. Written with `pdf-writer`; the layout is ours.

use std::io::Write as _;

use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::model::{Body, Chart, ChartKind, Figure, Report, Table, Unit, cell_text, grouped, human, time_label};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 40.0;
/// Nothing is drawn below this (the footer lives there).
const BOTTOM: f32 = 56.0;
const REGULAR: Name = Name(b"F1");
const BOLD: Name = Name(b"F2");

type Rgb = (f32, f32, f32);
const INK: Rgb = (0.13, 0.15, 0.18);
const MUTED: Rgb = (0.42, 0.45, 0.5);
const RULE: Rgb = (0.82, 0.84, 0.87);
const SHADE: Rgb = (0.95, 0.96, 0.97);
const PALETTE: [Rgb; 10] = [
    (0.18, 0.44, 0.84),
    (0.91, 0.45, 0.23),
    (0.10, 0.66, 0.47),
    (0.93, 0.29, 0.48),
    (0.58, 0.37, 0.81),
    (0.07, 0.64, 0.71),
    (0.32, 0.36, 0.96),
    (0.75, 0.22, 0.62),
    (0.42, 0.53, 0.58),
    (0.93, 0.41, 0.41),
];

fn severity_color(label: &str) -> Option<Rgb> {
    Some(match label {
        "critical" => (0.55, 0.05, 0.10),
        "high" => (0.86, 0.20, 0.18),
        "medium" => (0.95, 0.55, 0.12),
        "low" => (0.93, 0.77, 0.18),
        "info" => (0.30, 0.55, 0.85),
        _ => return None,
    })
}

/// Render the whole report.
pub fn render(r: &Report) -> Vec<u8> {
    let mut w = Writer::new();
    w.header(r);
    for s in &r.sections {
        w.section(&s.title, &s.body);
    }
    w.finish(r)
}

struct Writer {
    done: Vec<Content>,
    page: Content,
    y: f32,
}

impl Writer {
    fn new() -> Writer {
        Writer { done: Vec::new(), page: Content::new(), y: PAGE_H - MARGIN }
    }

    fn new_page(&mut self) {
        let full = std::mem::replace(&mut self.page, Content::new());
        self.done.push(full);
        self.y = PAGE_H - MARGIN;
    }

    /// Room for `h` points, or a new page.
    fn need(&mut self, h: f32) {
        if self.y - h < BOTTOM {
            self.new_page();
        }
    }

    fn text(&mut self, x: f32, y: f32, s: &str, bold: bool, size: f32, color: Rgb) {
        let bytes = encode(s);
        self.page.set_fill_rgb(color.0, color.1, color.2);
        self.page
            .begin_text()
            .set_font(if bold { BOLD } else { REGULAR }, size)
            .next_line(x, y)
            .show(Str(&bytes))
            .end_text();
    }

    fn text_right(&mut self, right: f32, y: f32, s: &str, bold: bool, size: f32, color: Rgb) {
        let x = right - width(s, bold, size);
        self.text(x, y, s, bold, size, color);
    }

    fn text_center(&mut self, center: f32, y: f32, s: &str, bold: bool, size: f32, color: Rgb) {
        let x = center - width(s, bold, size) / 2.0;
        self.text(x, y, s, bold, size, color);
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, color: Rgb) {
        self.page.set_fill_rgb(color.0, color.1, color.2);
        self.page.rect(x, y, w, h).fill_nonzero();
    }

    fn line(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, color: Rgb, width: f32) {
        self.page.set_stroke_rgb(color.0, color.1, color.2);
        self.page.set_line_width(width);
        self.page.move_to(x0, y0).line_to(x1, y1).stroke();
    }

    fn header(&mut self, r: &Report) {
        self.rect(0.0, PAGE_H - 6.0, PAGE_W, 6.0, PALETTE[0]);
        self.text(MARGIN, self.y - 20.0, &r.title, true, 20.0, INK);
        self.y -= 36.0;
        let range = format!("{}  to  {} (UTC)", time_text(&r.from), time_text(&r.to));
        self.text(MARGIN, self.y, &range, false, 10.0, MUTED);
        self.y -= 13.0;
        let filter = if r.filter.is_empty() { "all traffic".to_string() } else { r.filter.clone() };
        let line = format!("Filter: {filter}    Generated {} UTC by tapstream", time_text(&r.generated));
        self.text(MARGIN, self.y, &fit(&line, PAGE_W - 2.0 * MARGIN, false, 9.0), false, 9.0, MUTED);
        self.y -= 10.0;
        self.line(MARGIN, self.y, PAGE_W - MARGIN, self.y, RULE, 0.8);
        self.y -= 8.0;
    }

    fn section(&mut self, title: &str, body: &Body) {
        // The title stays with at least the start of its body.
        let first = match body {
            Body::Figures { .. } => 52.0,
            Body::Chart(c) => chart_height(c),
            Body::Table(_) => 40.0,
            Body::Note { .. } => 16.0,
        };
        self.need(26.0 + first);
        self.y -= 18.0;
        self.text(MARGIN, self.y, title, true, 13.0, INK);
        self.y -= 8.0;
        match body {
            Body::Figures { figures } => self.figures(figures),
            Body::Chart(c) if c.points.is_empty() => self.note("No data in this range."),
            Body::Chart(c) => self.chart(c),
            Body::Table(t) => self.table(t),
            Body::Note { text } => self.note(text),
        }
    }

    fn note(&mut self, s: &str) {
        for line in wrap(s, PAGE_W - 2.0 * MARGIN, 10.0) {
            self.need(16.0);
            self.y -= 12.0;
            self.text(MARGIN, self.y, &line, false, 10.0, MUTED);
        }
        self.y -= 4.0;
    }

    fn figures(&mut self, figs: &[Figure]) {
        const PER_ROW: usize = 4;
        const GAP: f32 = 8.0;
        const H: f32 = 44.0;
        let w = (PAGE_W - 2.0 * MARGIN - GAP * (PER_ROW as f32 - 1.0)) / PER_ROW as f32;
        for row in figs.chunks(PER_ROW) {
            self.need(H + GAP);
            let top = self.y - 2.0;
            for (i, f) in row.iter().enumerate() {
                let x = MARGIN + i as f32 * (w + GAP);
                self.rect(x, top - H, w, H, SHADE);
                self.rect(x, top - H, 3.0, H, PALETTE[0]);
                self.text(x + 9.0, top - 14.0, &fit(&f.label, w - 14.0, false, 8.0), false, 8.0, MUTED);
                let v = match f.unit {
                    Unit::Count if f.value < 1e6 => grouped(f.value),
                    u => human(f.value, u),
                };
                self.text(x + 9.0, top - 34.0, &fit(&v, w - 14.0, true, 15.0), true, 15.0, INK);
            }
            self.y = top - H - GAP;
        }
    }

    fn chart(&mut self, c: &Chart) {
        let h = chart_height(c);
        self.need(h);
        let top = self.y - 4.0;
        match c.kind {
            ChartKind::Line => self.line_chart(c, top, h),
            ChartKind::Donut => self.donut(c, top, h),
            ChartKind::Bars => self.bars(c, top),
            ChartKind::Columns => self.columns(c, top, h),
        }
        self.y = top - h;
    }

    /// Horizontal grid lines and y labels; the scale's top.
    fn y_axis(&mut self, x0: f32, x1: f32, y0: f32, y1: f32, max: f64, unit: Unit) -> f64 {
        let (top, step) = nice_scale(max);
        let mut v = 0.0;
        while v <= top + step * 0.01 {
            let y = y0 + ((v / top) as f32) * (y1 - y0);
            self.line(x0, y, x1, y, RULE, 0.5);
            self.text_right(x0 - 4.0, y - 3.0, &human(v, unit), false, 7.0, MUTED);
            v += step;
        }
        top
    }

    fn line_chart(&mut self, c: &Chart, top: f32, h: f32) {
        let (x0, x1) = (MARGIN + 58.0, PAGE_W - MARGIN - 6.0);
        let (y0, y1) = (top - h + 22.0, top - 8.0);
        let max = c.points.iter().map(|p| p.value).fold(0.0, f64::max);
        let scale = self.y_axis(x0, x1, y0, y1, max, c.unit);
        let n = c.points.len();
        let xs = |i: usize| if n == 1 { (x0 + x1) / 2.0 } else { x0 + (x1 - x0) * i as f32 / (n - 1) as f32 };
        let ys = |v: f64| y0 + ((v / scale) as f32) * (y1 - y0);
        // The area under the line, then the line.
        let fill = mix(PALETTE[0], (1.0, 1.0, 1.0), 0.75);
        self.page.set_fill_rgb(fill.0, fill.1, fill.2);
        self.page.move_to(xs(0), y0);
        for (i, p) in c.points.iter().enumerate() {
            self.page.line_to(xs(i), ys(p.value));
        }
        self.page.line_to(xs(n - 1), y0).close_path().fill_nonzero();
        let col = PALETTE[0];
        self.page.set_stroke_rgb(col.0, col.1, col.2);
        self.page.set_line_width(1.2);
        self.page.move_to(xs(0), ys(c.points[0].value));
        for (i, p) in c.points.iter().enumerate().skip(1) {
            self.page.line_to(xs(i), ys(p.value));
        }
        self.page.stroke();
        // Up to five time labels along the bottom.
        let times: Vec<i64> = c.points.iter().map(|p| p.label.parse().unwrap_or(0)).collect();
        let span = times.last().copied().unwrap_or(0) - times.first().copied().unwrap_or(0);
        let labels = 5.min(n);
        for k in 0..labels {
            let i = if labels == 1 { 0 } else { k * (n - 1) / (labels - 1) };
            let full = time_label(times[i]);
            // Within two days the date is implied.
            let cut = if span < 2 * 86_400_000_000_000 && k > 0 { 11 } else { 5 };
            let s = full.get(cut..).unwrap_or(&full).to_string();
            self.text_center(xs(i), y0 - 12.0, &s, false, 7.0, MUTED);
        }
        self.line(x0, y0, x1, y0, MUTED, 0.6);
    }

    fn donut(&mut self, c: &Chart, top: f32, h: f32) {
        let total: f64 = c.points.iter().map(|p| p.value.max(0.0)).sum();
        let (cx, cy) = (MARGIN + 90.0, top - h / 2.0);
        let (ro, ri) = (75.0f32, 42.0f32);
        let mut a = std::f32::consts::FRAC_PI_2;
        for (i, p) in c.points.iter().enumerate() {
            if total <= 0.0 {
                break;
            }
            let sweep = (p.value.max(0.0) / total) as f32 * std::f32::consts::TAU;
            if sweep <= 0.0 {
                continue;
            }
            let col = PALETTE[i % PALETTE.len()];
            self.page.set_fill_rgb(col.0, col.1, col.2);
            annulus_segment(&mut self.page, cx, cy, ro, ri, a, a - sweep);
            self.page.fill_nonzero();
            a -= sweep;
        }
        self.text_center(cx, cy - 4.0, &human(total, c.unit), true, 10.0, INK);
        // The legend: colour, label, value, share.
        let lx = MARGIN + 200.0;
        let mut y = top - 14.0;
        for (i, p) in c.points.iter().enumerate() {
            let col = PALETTE[i % PALETTE.len()];
            self.rect(lx, y - 1.0, 8.0, 8.0, col);
            self.text(lx + 14.0, y, &fit(&p.label, 150.0, false, 9.0), false, 9.0, INK);
            self.text_right(lx + 250.0, y, &human(p.value, c.unit), false, 9.0, INK);
            let share = if total > 0.0 { 100.0 * p.value / total } else { 0.0 };
            self.text_right(lx + 300.0, y, &format!("{share:.1}%"), false, 9.0, MUTED);
            y -= 14.0;
        }
    }

    fn bars(&mut self, c: &Chart, top: f32) {
        let label_w = 150.0;
        let (x0, x1) = (MARGIN + label_w, PAGE_W - MARGIN - 70.0);
        let max = c.points.iter().map(|p| p.value).fold(0.0, f64::max);
        let mut y = top - 2.0;
        for (i, p) in c.points.iter().enumerate() {
            let w = if max > 0.0 { ((p.value / max) as f32) * (x1 - x0) } else { 0.0 };
            self.text(MARGIN, y - 10.0, &fit(&p.label, label_w - 8.0, false, 8.5), false, 8.5, INK);
            self.rect(x0, y - 12.0, w.max(1.0), 11.0, PALETTE[i % PALETTE.len()]);
            self.text(x0 + w + 4.0, y - 10.0, &human(p.value, c.unit), false, 8.0, MUTED);
            y -= BAR_ROW;
        }
    }

    fn columns(&mut self, c: &Chart, top: f32, h: f32) {
        let (x0, x1) = (MARGIN + 58.0, PAGE_W - MARGIN - 6.0);
        let (y0, y1) = (top - h + 22.0, top - 14.0);
        let max = c.points.iter().map(|p| p.value).fold(0.0, f64::max);
        let scale = self.y_axis(x0, x1, y0, y1, max, c.unit);
        let n = c.points.len() as f32;
        let slot = (x1 - x0) / n;
        let bw = (slot * 0.6).min(60.0);
        for (i, p) in c.points.iter().enumerate() {
            let cx = x0 + slot * (i as f32 + 0.5);
            let bh = ((p.value / scale) as f32) * (y1 - y0);
            let col = severity_color(&p.label).unwrap_or(PALETTE[i % PALETTE.len()]);
            self.rect(cx - bw / 2.0, y0, bw, bh.max(0.5), col);
            self.text_center(cx, y0 + bh + 3.0, &human(p.value, c.unit), true, 8.0, INK);
            self.text_center(cx, y0 - 12.0, &fit(&p.label, slot - 4.0, false, 8.0), false, 8.0, INK);
        }
        self.line(x0, y0, x1, y0, MUTED, 0.6);
    }

    fn table(&mut self, t: &Table) {
        const ROW: f32 = 13.0;
        const SIZE: f32 = TABLE_TEXT;
        let avail = PAGE_W - 2.0 * MARGIN;
        let cells: Vec<Vec<String>> =
            t.rows.iter().map(|r| t.columns.iter().zip(r).map(|(c, v)| cell_text(v, c.unit)).collect()).collect();
        // Widths from the content, shrunk to fit; long text columns give way first.
        let mut widths: Vec<f32> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let head = width(&c.name, true, SIZE);
                let body = cells.iter().map(|r| width(&r[i], false, SIZE)).fold(0.0, f32::max);
                head.max(body) + 10.0
            })
            .collect();
        let total: f32 = widths.iter().sum();
        if total > avail {
            let fixed: f32 = widths.iter().zip(&t.columns).filter(|(_, c)| c.unit != Unit::Text).map(|(w, _)| w).sum();
            let text_total = total - fixed;
            let room = (avail - fixed).max(avail * 0.3);
            for (w, c) in widths.iter_mut().zip(&t.columns) {
                if c.unit == Unit::Text && text_total > 0.0 {
                    *w *= room / text_total;
                }
            }
            let t2: f32 = widths.iter().sum();
            if t2 > avail {
                for w in &mut widths {
                    *w *= avail / t2;
                }
            }
        }
        let head = |me: &mut Writer| {
            me.need(ROW * 2.0);
            me.rect(MARGIN, me.y - ROW, avail, ROW, mix(PALETTE[0], (1.0, 1.0, 1.0), 0.85));
            me.table_row(t.columns.iter().map(|c| c.name.as_str()), &t.columns, &widths, true);
            me.y -= ROW;
        };
        head(self);
        for (n, row) in cells.iter().enumerate() {
            if self.y - ROW < BOTTOM {
                self.new_page();
                head(self);
            }
            if n % 2 == 1 {
                self.rect(MARGIN, self.y - ROW, avail, ROW, SHADE);
            }
            self.table_row(row.iter().map(String::as_str), &t.columns, &widths, false);
            self.y -= ROW;
        }
        if t.rows.is_empty() {
            self.note("No rows in this range.");
        }
        if t.omitted > 0 {
            self.note(&format!(
                "{} more rows not shown (the CSV and JSON versions hold the first {} too; narrow the range or filter)",
                grouped(t.omitted as f64),
                t.rows.len()
            ));
        }
        self.y -= 4.0;
    }

    /// One line of a table at the current height: each cell cut to its
    /// column, numbers right-aligned.
    fn table_row<'a>(
        &mut self,
        cells: impl Iterator<Item = &'a str>,
        columns: &[super::model::Column],
        widths: &[f32],
        bold: bool,
    ) {
        let mut x = MARGIN;
        for ((s, c), w) in cells.zip(columns).zip(widths) {
            let s = fit(s, w - 6.0, bold, TABLE_TEXT);
            if matches!(c.unit, Unit::Count | Unit::Bytes | Unit::Bps | Unit::Percent | Unit::Seconds) {
                self.text_right(x + w - 4.0, self.y - 9.0, &s, bold, TABLE_TEXT, INK);
            } else {
                self.text(x + 3.0, self.y - 9.0, &s, bold, TABLE_TEXT, INK);
            }
            x += w;
        }
    }

    fn finish(mut self, r: &Report) -> Vec<u8> {
        self.new_page();
        let pages = std::mem::take(&mut self.done);
        let n = pages.len();
        let catalog = Ref::new(1);
        let tree = Ref::new(2);
        let (f1, f2, info) = (Ref::new(3), Ref::new(4), Ref::new(5));
        let page_ref = |i: usize| Ref::new(6 + 2 * i as i32);
        let content_ref = |i: usize| Ref::new(7 + 2 * i as i32);
        let mut pdf = Pdf::new();
        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree).kids((0..n).map(page_ref)).count(n as i32);
        pdf.type1_font(f1).base_font(Name(b"Helvetica")).encoding_predefined(Name(b"WinAnsiEncoding"));
        pdf.type1_font(f2).base_font(Name(b"Helvetica-Bold")).encoding_predefined(Name(b"WinAnsiEncoding"));
        pdf.document_info(info).title(TextStr(&r.title)).producer(TextStr("tapstream")).creator(TextStr("tapstream"));
        for (i, mut content) in pages.into_iter().enumerate() {
            // The footer, now that the page count is known.
            let foot = encode(&format!("tapstream \u{b7} {}", r.title));
            let num = format!("page {} of {n}", i + 1);
            content.set_fill_rgb(MUTED.0, MUTED.1, MUTED.2);
            content.begin_text().set_font(REGULAR, 8.0).next_line(MARGIN, 28.0).show(Str(&foot)).end_text();
            let x = PAGE_W - MARGIN - width(&num, false, 8.0);
            content.begin_text().set_font(REGULAR, 8.0).next_line(x, 28.0).show(Str(&encode(&num))).end_text();
            let raw = content.finish();
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing into a Vec cannot fail.
            let _ = z.write_all(&raw);
            let packed = z.finish().unwrap_or_default();
            let mut page = pdf.page(page_ref(i));
            page.parent(tree).media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H)).contents(content_ref(i));
            page.resources().fonts().pair(REGULAR, f1).pair(BOLD, f2);
            page.finish();
            pdf.stream(content_ref(i), &packed).filter(Filter::FlateDecode);
        }
        pdf.finish()
    }
}

const BAR_ROW: f32 = 16.0;
/// Font size of table text.
const TABLE_TEXT: f32 = 7.5;

fn chart_height(c: &Chart) -> f32 {
    match c.kind {
        _ if c.points.is_empty() => 16.0,
        ChartKind::Line => 170.0,
        ChartKind::Columns => 150.0,
        ChartKind::Donut => (c.points.len() as f32 * 14.0 + 10.0).max(170.0),
        ChartKind::Bars => c.points.len() as f32 * BAR_ROW + 6.0,
    }
}

/// A ring segment from angle `a0` to `a1` (radians, either direction),
/// outer arc out and inner arc back, as Bézier curves of at most 90°.
fn annulus_segment(c: &mut Content, cx: f32, cy: f32, ro: f32, ri: f32, a0: f32, a1: f32) {
    let pt = |r: f32, a: f32| (cx + r * a.cos(), cy + r * a.sin());
    let (sx, sy) = pt(ro, a0);
    c.move_to(sx, sy);
    arc(c, cx, cy, ro, a0, a1);
    let (ex, ey) = pt(ri, a1);
    c.line_to(ex, ey);
    arc(c, cx, cy, ri, a1, a0);
    c.close_path();
}

fn arc(c: &mut Content, cx: f32, cy: f32, r: f32, a0: f32, a1: f32) {
    let parts = ((a1 - a0).abs() / std::f32::consts::FRAC_PI_2).ceil().max(1.0) as usize;
    let step = (a1 - a0) / parts as f32;
    let k = 4.0 / 3.0 * (step / 4.0).tan();
    let mut a = a0;
    for _ in 0..parts {
        let b = a + step;
        let (x0, y0) = (cx + r * a.cos(), cy + r * a.sin());
        let (x3, y3) = (cx + r * b.cos(), cy + r * b.sin());
        let (x1, y1) = (x0 - k * r * a.sin(), y0 + k * r * a.cos());
        let (x2, y2) = (x3 + k * r * b.sin(), y3 - k * r * b.cos());
        c.cubic_to(x1, y1, x2, y2, x3, y3);
        a = b;
    }
}

/// A round top for an axis and its tick step (1, 2 or 5 times a power of ten).
fn nice_scale(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t, a.2 + (b.2 - a.2) * t)
}

/// RFC 3339 as "YYYY-MM-DD HH:MM:SS".
fn time_text(s: &str) -> String {
    let t = s.replace('T', " ");
    t.trim_end_matches('Z').split('.').next().unwrap_or_default().to_string()
}

/// Text in WinAnsi (the encoding the standard fonts use): Latin-1 as is,
/// arrows and dashes spelled out, anything else as `?`.
fn encode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{ff}' => out.push(ch as u8),
            '\u{2192}' => out.extend_from_slice(b"->"),
            '\u{2013}' => out.push(0x96),
            '\u{2014}' => out.push(0x97),
            '\u{2026}' => out.push(0x85),
            '\u{2022}' => out.push(0x95),
            '\t' | '\n' | '\r' => out.push(b' '),
            _ => out.push(b'?'),
        }
    }
    out
}

/// Advance widths (1/1000 em) of Helvetica and Helvetica-Bold for ASCII
/// 32..=126, from the fonts' published metrics.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556,
    556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334,
    260, 334, 584,
];
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611,
    556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389,
    280, 389, 584,
];

fn width(s: &str, bold: bool, size: f32) -> f32 {
    let table = if bold { &HELVETICA_BOLD } else { &HELVETICA };
    let units: u32 =
        encode(s).iter().map(|&b| if (32..=126).contains(&b) { table[(b - 32) as usize] as u32 } else { 556 }).sum();
    units as f32 * size / 1000.0
}

/// `s` broken into lines of at most `max` points, between words (a word
/// longer than a line is cut to fit).
fn wrap(s: &str, max: f32, size: f32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for w in s.split_whitespace() {
        let next = if cur.is_empty() { w.to_string() } else { format!("{cur} {w}") };
        if width(&next, false, size) <= max || cur.is_empty() {
            cur = next;
        } else {
            lines.push(std::mem::replace(&mut cur, w.to_string()));
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines.into_iter().map(|l| fit(&l, max, false, size)).collect()
}

/// `s` cut (with an ellipsis) to fit `max` points.
fn fit(s: &str, max: f32, bold: bool, size: f32) -> String {
    if width(s, bold, size) <= max {
        return s.to_string();
    }
    let mut out: String = s.to_string();
    while !out.is_empty() && width(&format!("{out}\u{2026}"), bold, size) > max {
        out.pop();
    }
    format!("{out}\u{2026}")
}

#[cfg(test)]
mod tests {
    use super::super::model::{Column, Point};
    use super::*;

    #[test]
    fn notes_wrap_between_words() {
        let text = "Traffic, packets and bandwidth count every packet captured; the protocols below count \
                    the connections written to history, so connections still open are not in them yet.";
        let lines = wrap(text, 200.0, 10.0);
        assert!(lines.len() > 2, "{lines:?}");
        assert!(lines.iter().all(|l| width(l, false, 10.0) <= 200.0 && !l.contains('\u{2026}')), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        assert_eq!(wrap("", 200.0, 10.0), [""]);
        let long = wrap(&"x".repeat(500), 100.0, 10.0);
        assert_eq!(long.len(), 1);
        assert!(long[0].ends_with('\u{2026}'));
    }

    #[test]
    fn a_report_renders_to_a_pdf_of_several_pages() {
        let mut r = Report {
            kind: "traffic".into(),
            title: "Traffic summary".into(),
            from: "2026-12-01T00:00:00Z".into(),
            to: "2026-12-02T00:00:00Z".into(),
            generated: "2026-12-02T00:00:05Z".into(),
            filter: "port 443".into(),
            sections: Vec::new(),
        };
        r.section(
            "Totals",
            Body::Figures { figures: vec![Figure { label: "Bytes".into(), value: 1.5e9, unit: Unit::Bytes }] },
        );
        let pts = |n: usize| (0..n).map(|i| Point { label: format!("h{i} → x"), value: (i * 7 % 5) as f64 }).collect();
        for kind in [ChartKind::Donut, ChartKind::Bars, ChartKind::Columns] {
            r.section("Chart", Body::Chart(Chart { kind, unit: Unit::Count, points: pts(6) }));
        }
        r.section(
            "Over time",
            Body::Chart(Chart {
                kind: ChartKind::Line,
                unit: Unit::Bps,
                points: (0..50)
                    .map(|i| Point {
                        label: (1_764_547_200_000_000_000i64 + i * 60_000_000_000).to_string(),
                        value: i as f64,
                    })
                    .collect(),
            }),
        );
        r.section(
            "Rows",
            Body::Table(Table {
                columns: vec![
                    Column { name: "n".into(), unit: Unit::Count },
                    Column { name: "text".into(), unit: Unit::Text },
                ],
                rows: (0..200).map(|i| vec![i.into(), "x".repeat(i % 300).into()]).collect(),
                omitted: 3,
            }),
        );
        let pdf = render(&r);
        assert!(pdf.starts_with(b"%PDF-"));
        let pages = pdf.windows(b"/Type /Page\n".len()).filter(|w| w == b"/Type /Page\n").count()
            + pdf.windows(b"/Type /Page ".len()).filter(|w| w == b"/Type /Page ").count();
        assert!(pages >= 3, "{pages} pages");
    }

    #[test]
    fn text_is_measured_and_cut_to_fit() {
        assert_eq!(width("0", false, 1000.0), 556.0);
        let s = fit("a rather long label that does not fit", 60.0, false, 9.0);
        assert!(s.ends_with('\u{2026}') && width(&s, false, 9.0) <= 60.0, "{s}");
        assert_eq!(encode("a→b ü 中"), b"a->b \xfc ?".to_vec());
        assert_eq!(nice_scale(930.0), (1000.0, 250.0));
        assert_eq!(nice_scale(0.0), (1.0, 0.25));
    }
}

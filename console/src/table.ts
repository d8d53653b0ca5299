// A virtualised table: only the rows in view are in the DOM, so 10,000
// rows scroll and update smoothly. Columns can be chosen and sorted.
import { cell, h } from "./util";

export interface Column {
  name: string;
  label?: string;
  width?: number;
  render?: (v: unknown, row: Record<string, unknown>) => Node | string;
}

export interface TableOptions {
  columns: Column[];
  visible?: string[];
  rowHeight?: number;
  onRow?: (row: Record<string, unknown>) => void;
  empty?: string;
}

export class VTable {
  readonly el: HTMLElement;
  private head: HTMLElement;
  private body: HTMLElement;
  private spacer: HTMLElement;
  private rowsEl: HTMLElement;
  private rows: Record<string, unknown>[] = [];
  private shown: Column[];
  private sort: { col: string; desc: boolean } | null = null;
  private rh: number;
  private frame = 0;

  constructor(private opts: TableOptions) {
    this.rh = opts.rowHeight ?? 24;
    this.shown = opts.visible ? opts.columns.filter((c) => opts.visible!.includes(c.name)) : opts.columns;
    this.head = h("div", { class: "vt-head" });
    this.spacer = h("div", { class: "vt-spacer" });
    this.rowsEl = h("div", { class: "vt-rows" });
    this.body = h("div", { class: "vt-body", role: "rowgroup" }, this.spacer, this.rowsEl);
    this.body.addEventListener("scroll", () => this.schedule(), { passive: true });
    this.el = h("div", { class: "vt", role: "table" }, this.head, this.body);
    new ResizeObserver(() => this.schedule()).observe(this.body);
    this.renderHead();
  }

  columns(): Column[] {
    return this.opts.columns;
  }

  visibleColumns(): string[] {
    return this.shown.map((c) => c.name);
  }

  setColumns(columns: Column[], visible?: string[]): void {
    this.opts.columns = columns;
    const want = visible ?? this.visibleColumns();
    const keep = columns.filter((c) => want.includes(c.name));
    this.shown = keep.length ? keep : columns;
    this.renderHead();
    this.schedule();
  }

  setVisible(names: string[]): void {
    this.shown = this.opts.columns.filter((c) => names.includes(c.name));
    this.renderHead();
    this.schedule();
  }

  setRows(rows: Record<string, unknown>[]): void {
    this.rows = rows;
    this.applySort();
    this.spacer.style.height = `${this.rows.length * this.rh}px`;
    this.schedule();
  }

  rowCount(): number {
    return this.rows.length;
  }

  private applySort(): void {
    if (!this.sort) return;
    const { col, desc } = this.sort;
    const k = (v: unknown) => (typeof v === "number" ? v : cell(v));
    this.rows.sort((a, b) => {
      const x = k(a[col]);
      const y = k(b[col]);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return desc ? -c : c;
    });
  }

  private grid(): string {
    return this.shown.map((c) => `${c.width ?? 140}px`).join(" ");
  }

  private renderHead(): void {
    this.head.replaceChildren(
      ...this.shown.map((c) =>
        h(
          "div",
          {
            class: "vt-th",
            role: "columnheader",
            title: `sort by ${c.label ?? c.name}`,
            onclick: () => {
              this.sort = { col: c.name, desc: this.sort?.col === c.name ? !this.sort.desc : true };
              this.applySort();
              this.renderHead();
              this.schedule();
            },
          },
          c.label ?? c.name,
          this.sort?.col === c.name ? (this.sort.desc ? " ▾" : " ▴") : "",
        ),
      ),
    );
    this.head.style.gridTemplateColumns = this.grid();
  }

  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.paint();
    });
  }

  private paint(): void {
    const top = this.body.scrollTop;
    const height = this.body.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / this.rh) - 5);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / this.rh) + 5);
    const grid = this.grid();
    const width = this.shown.reduce((s, c) => s + (c.width ?? 140), 0);
    this.spacer.style.width = `${width}px`;
    this.head.style.width = `${width}px`;
    this.head.style.transform = `translateX(${-this.body.scrollLeft}px)`;
    if (!this.rows.length) {
      this.rowsEl.replaceChildren(h("div", { class: "vt-empty" }, this.opts.empty ?? "No rows"));
      return;
    }
    const out: HTMLElement[] = [];
    for (let i = first; i < last; i++) {
      const row = this.rows[i];
      const r = h(
        "div",
        { class: "vt-row", role: "row", style: `top:${i * this.rh}px;height:${this.rh}px;grid-template-columns:${grid};width:${width}px` },
        ...this.shown.map((c) => {
          const v = row[c.name];
          const content = c.render ? c.render(v, row) : cell(v);
          return h("div", { class: "vt-td", role: "cell", title: typeof content === "string" ? content : undefined }, content);
        }),
      );
      if (this.opts.onRow) r.addEventListener("click", () => this.opts.onRow!(row));
      out.push(r);
    }
    this.rowsEl.replaceChildren(...out);
  }
}

/** A column chooser: a details menu of checkboxes. */
export function columnChooser(t: VTable, onChange?: (names: string[]) => void): HTMLElement {
  const menu = h("div", { class: "menu" });
  const d = h("details", { class: "chooser" }, h("summary", { class: "btn" }, "Columns"), menu);
  const render = () => {
    const vis = new Set(t.visibleColumns());
    menu.replaceChildren(
      ...t.columns().map((c) =>
        h(
          "label",
          null,
          h("input", {
            type: "checkbox",
            checked: vis.has(c.name),
            onchange: (e: Event) => {
              const on = (e.target as HTMLInputElement).checked;
              const names = t.columns().map((x) => x.name).filter((n) => (n === c.name ? on : vis.has(n)));
              if (!names.length) return;
              t.setVisible(names);
              onChange?.(names);
              render();
            },
          }),
          c.label ?? c.name,
        ),
      ),
    );
  };
  d.addEventListener("toggle", render);
  render();
  return d;
}

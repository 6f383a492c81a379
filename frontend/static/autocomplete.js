// An accessible combobox (WAI-ARIA 1.2 list autocomplete) over an <input>.

let nextId = 0;

export class Autocomplete {
  /**
   * @param {HTMLInputElement} input has role="combobox" and aria-controls
   * @param {HTMLElement} listbox has role="listbox"
   * @param {{suggest: (text: string) => Array<{value: string, note?: string}>,
   *          pick: (value: string | null, text: string) => void}} handlers
   *   `pick` gets the chosen option's value, or null when Enter was pressed
   *   with no option highlighted (the typed text is then used as is).
   */
  constructor(input, listbox, { suggest, pick }) {
    this.input = input;
    this.listbox = listbox;
    this.suggest = suggest;
    this.pick = pick;
    this.options = [];
    this.active = -1;
    this.prefix = `option-${nextId++}`;
    input.addEventListener("input", () => this.update());
    input.addEventListener("keydown", (event) => this.onKey(event));
    input.addEventListener("blur", () => this.close());
    // mousedown would move focus away from the input before the click lands.
    listbox.addEventListener("mousedown", (event) => event.preventDefault());
    listbox.addEventListener("click", (event) => {
      const option = event.target.closest("[role=option]");
      if (option) this.choose(Number(option.dataset.index));
    });
  }

  update() {
    this.options = this.input.value.trim() ? this.suggest(this.input.value) : [];
    this.active = -1;
    this.render();
  }

  render() {
    this.listbox.replaceChildren(
      ...this.options.map((option, index) => {
        const item = document.createElement("li");
        item.id = `${this.prefix}-${index}`;
        item.setAttribute("role", "option");
        item.setAttribute("aria-selected", String(index === this.active));
        item.dataset.index = String(index);
        item.append(option.value);
        if (option.note) {
          const note = document.createElement("span");
          note.className = "option-note";
          note.textContent = option.note;
          item.append(" ", note);
        }
        return item;
      }),
    );
    const open = this.options.length > 0;
    this.listbox.hidden = !open;
    this.input.setAttribute("aria-expanded", String(open));
    if (this.active >= 0) {
      this.input.setAttribute("aria-activedescendant", `${this.prefix}-${this.active}`);
      this.listbox.children[this.active].scrollIntoView({ block: "nearest" });
    } else {
      this.input.removeAttribute("aria-activedescendant");
    }
  }

  close() {
    this.options = [];
    this.active = -1;
    this.render();
  }

  move(step) {
    if (!this.options.length) this.update();
    if (!this.options.length) return;
    const count = this.options.length;
    this.active = this.active < 0 && step < 0 ? count - 1 : (this.active + step + count) % count;
    this.render();
  }

  choose(index) {
    const option = this.options[index];
    this.pick(option ? option.value : null, this.input.value);
    this.close();
  }

  onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "ArrowDown") this.move(1);
    else if (event.key === "ArrowUp") this.move(-1);
    else if (event.key === "Enter") this.choose(this.active);
    else if (event.key === "Escape" && this.options.length) this.close();
    else return;
    event.preventDefault();
  }
}

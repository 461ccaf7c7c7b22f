// Paged list routes answer `{<rows>: [...], next_cursor}`: what the pages share to follow the
// cursor, either all at once (small lists a page needs whole) or one page per "Load more".
import { api, errorText } from "../api.js";
import { el, query, table } from "../dom.js";

// Every row of a paged route, following next_cursor for at most `maxPages` pages:
// { rows, more } (more: pages were left unread).
export async function allPages(path, params, key, maxPages = 10) {
  const rows = [];
  let cursor = "";
  for (let i = 0; i < maxPages; i++) {
    const page = await api(path + query({ ...params, cursor }));
    rows.push(...page[key]);
    if (!page.next_cursor) return { rows, more: false };
    cursor = page.next_cursor;
  }
  return { rows, more: true };
}

// A "Load more" button: reads the page after `nextCursor`, hands its rows to `append`, and hides
// itself after the last page. Hidden from the start when there is no next page.
export function loadMore({ path, params, key, nextCursor, append, id }) {
  let cursor = nextCursor;
  const status = el("span", { class: "result" });
  const button = el("button", {
    type: "button",
    class: "secondary",
    id,
    onclick: async () => {
      button.disabled = true;
      status.textContent = "";
      try {
        const page = await api(path + query({ ...params, cursor }));
        append(page[key]);
        cursor = page.next_cursor;
        wrapper.hidden = !cursor;
      } catch (error) {
        status.className = "result error";
        status.textContent = errorText(error);
      }
      button.disabled = false;
    },
  }, "Load more");
  const wrapper = el("p", { class: "load-more" }, button, " ", status);
  wrapper.hidden = !cursor;
  return wrapper;
}

// Rows added to a table that `table()` drew, with the same columns.
export function appendRows(drawn, columns, rows, onClick) {
  const more = table(columns, rows, onClick);
  drawn.tBodies[0].append(...more.tBodies[0].children);
}

// Small, explicit helpers for driving the VS Code workbench in the browser. Everything goes
// through the UI a user would use (command palette, quick open, keyboard), so a passing run
// means the extension works in VS Code, not just that its functions can be called.

export const QUICK_INPUT = '.quick-input-widget';

export async function waitForWorkbench(page, timeout = 120_000) {
  await page.locator('.monaco-workbench').waitFor({ state: 'visible', timeout });
  await page.locator('.part.statusbar').waitFor({ state: 'visible', timeout });
}

async function openQuickInput(page) {
  await page.keyboard.press('F1');
  const widget = page.locator(QUICK_INPUT);
  await widget.waitFor({ state: 'visible', timeout: 15_000 });
  return widget;
}

async function closeQuickInputIfOpen(page) {
  const widget = page.locator(QUICK_INPUT);
  if (await widget.isVisible()) {
    await page.keyboard.press('Escape');
    await widget.waitFor({ state: 'hidden', timeout: 5_000 }).catch(() => undefined);
  }
}

/** Runs a command through the command palette by its title; `rowText` picks the exact row. */
export async function runCommand(page, query, rowText = query) {
  await closeQuickInputIfOpen(page);
  const widget = await openQuickInput(page);
  await page.keyboard.type(query, { delay: 5 });
  const row = widget.locator('.monaco-list-row', { hasText: rowText }).first();
  await row.waitFor({ state: 'visible', timeout: 15_000 });
  await row.click();
  await widget.waitFor({ state: 'hidden', timeout: 10_000 });
}

/** Quick open without the ">" of the command palette: files by name, or ":line:col". */
async function quickOpen(page, text, pickRow) {
  await closeQuickInputIfOpen(page);
  const widget = await openQuickInput(page);
  await page.keyboard.press('Backspace');
  await page.keyboard.type(text, { delay: 5 });
  if (pickRow) {
    const row = widget.locator('.monaco-list-row', { hasText: pickRow }).first();
    await row.waitFor({ state: 'visible', timeout: 15_000 });
  }
  await page.keyboard.press('Enter');
  await widget.waitFor({ state: 'hidden', timeout: 10_000 });
}

export async function openFile(page, name) {
  await quickOpen(page, name, name);
  // the file may then be active in two editor groups (a view opened beside it took the second
  // group, and quick open answered there): either tab shows it open
  await page.locator('.tab.active', { hasText: name }).first().waitFor({ state: 'visible', timeout: 15_000 });
}

/** Moves the cursor to a 1-based line and column of the text editor in the first group. */
export async function gotoPosition(page, line, column) {
  // a webview beside it (the attribution matrix) may hold the focus after a click in it, and
  // "go to line" then answers "Open a text editor first": the text editor gets the focus first
  await runCommand(page, 'View: Focus First Editor Group', 'Focus First Editor Group');
  await quickOpen(page, `:${line}:${column}`);
  await expectCursor(page, line, column);
}

/** The "Ln 12, Col 5" item of the status bar, parsed. */
export async function cursorPosition(page) {
  const text = await page.locator('.statusbar-item', { hasText: /Ln \d+, Col \d+/ }).first().innerText();
  const match = /Ln (\d+), Col (\d+)/.exec(text);
  return match ? { line: Number(match[1]), column: Number(match[2]), text } : undefined;
}

export async function expectCursor(page, line, column, timeout = 5_000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await cursorPosition(page);
    if (last && last.line === line && last.column === column) {
      return;
    }
    await page.waitForTimeout(100);
  }
  throw new Error(`cursor is at ${last?.text ?? '?'}, expected Ln ${line}, Col ${column}`);
}

/** The whence status bar item. */
export function whenceStatusItem(page) {
  return page.locator('.part.statusbar .statusbar-item', { hasText: /whence:/ }).first();
}

export async function hideHover(page) {
  await page.keyboard.press('Escape');
  await page.waitForTimeout(200);
}

/** Polls `probe` until it returns a truthy value; the last value is in the error otherwise. */
export async function eventually(description, probe, { timeout = 60_000, interval = 500 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) {
        return last;
      }
    } catch (error) {
      if (error?.fatal) {
        throw error; // waiting longer cannot help (e.g. the server reported an error)
      }
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout / 1000} s waiting for ${description}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

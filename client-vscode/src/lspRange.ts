// LSP ranges from the whence/... custom messages, which the language client does not convert.

import * as vscode from 'vscode';
import type { LspPosition, LspRange } from './protocol';

export function toVsRange(range: LspRange): vscode.Range {
  return new vscode.Range(range.start.line, range.start.character, range.end.line, range.end.character);
}

export function toLspPosition(position: vscode.Position): LspPosition {
  return { line: position.line, character: position.character };
}

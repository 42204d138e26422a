"""Host-side bookkeeping of a paged KV cache's pool: which pages are free, which rows hold which.

The device holds the pages (`jaxalign.sampling.paged`); the host decides where each row's tokens
go. A row grows page by page (`reserve`), gives its pages back when it ends (`release`), and the G
samples of a prompt share the prompt's pages (`share`): full pages are shared by reference count,
and the partly filled last page is copied (copy on write at the first page the samples can differ
in), so a group prefills its prompt once.
"""

from __future__ import annotations

import numpy as np


class OutOfPages(RuntimeError):
    """The pool has fewer free pages than a request needs (the engine then waits or evicts)."""


class PageAllocator:
    """A pool of `num_pages` pages of `page_size` slots; rows hold at most `max_pages_per_row`."""

    def __init__(self, num_pages: int, page_size: int, max_pages_per_row: int):
        if num_pages <= 0 or page_size <= 0 or max_pages_per_row <= 0:
            raise ValueError(f"PageAllocator({num_pages}, {page_size}, {max_pages_per_row}): sizes must be positive")
        self.page_size, self.max_pages_per_row = page_size, max_pages_per_row
        self._free = list(range(num_pages - 1, -1, -1))  # a stack: the lowest page number is handed out first
        self._refs = np.zeros(num_pages, np.int32)
        self.rows: dict[int, list[int]] = {}

    @property
    def num_free(self) -> int:
        return len(self._free)

    def pages_for(self, length: int) -> int:
        """Pages that hold `length` tokens."""
        return -(-length // self.page_size)

    def _take(self, n: int) -> list[int]:
        if n > len(self._free):
            raise OutOfPages(f"need {n} pages, {len(self._free)} free of {len(self._refs)}")
        taken = [self._free.pop() for _ in range(n)]
        self._refs[taken] = 1
        return taken

    def reserve(self, row: int, length: int) -> list[int]:
        """Makes `row` hold pages for `length` tokens; returns the pages it newly got."""
        pages = self.rows.setdefault(row, [])
        need = self.pages_for(length)
        if need > self.max_pages_per_row:
            raise OutOfPages(f"row {row}: {length} tokens need {need} pages, a row holds at most "
                             f"{self.max_pages_per_row}")
        new = self._take(max(need - len(pages), 0))
        pages += new
        return new

    def share(self, source: int, row: int, length: int) -> list[tuple[int, int]]:
        """Gives the new `row` the first `length` tokens of `source`: its full pages by reference, and
        a fresh copy of a partly filled last page. Returns the (source page, new page) copies the
        device must make before either row writes again."""
        if row in self.rows:
            raise ValueError(f"share: row {row} already holds pages")
        src = self.rows[source]
        full, rest = divmod(length, self.page_size)
        if self.pages_for(length) > len(src):
            raise ValueError(f"share: row {source} holds {len(src)} pages, fewer than {length} tokens need")
        copies = []
        pages = list(src[:full])
        if rest:
            [fresh] = self._take(1)
            copies.append((src[full], fresh))
            pages.append(fresh)
        self._refs[pages[:full]] += 1
        self.rows[row] = pages
        return copies

    def release(self, row: int) -> None:
        """`row` ended: its pages return to the pool once no other row holds them."""
        for page in self.rows.pop(row, []):
            self._refs[page] -= 1
            if self._refs[page] == 0:
                self._free.append(page)

    def table(self, rows: list[int]) -> np.ndarray:
        """[len(rows), max_pages_per_row] int32 page table (unused entries 0, never read)."""
        out = np.zeros((len(rows), self.max_pages_per_row), np.int32)
        for i, row in enumerate(rows):
            pages = self.rows.get(row, [])
            out[i, :len(pages)] = pages
        return out

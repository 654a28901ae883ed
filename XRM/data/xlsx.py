"""Reading the first sheet of an Excel workbook (.xlsx, Office Open XML) without a spreadsheet library.

An .xlsx file is a zip of XML parts: ``xl/workbook.xml`` names the sheets, its relationships
(``xl/_rels/workbook.xml.rels``) say which part holds each, ``xl/sharedStrings.xml`` holds the
text that cells point at. Only cell values are read (no formulas, dates or styles): enough for a
table of text and numbers such as CheXpert's demographics file.
"""
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from XRM.common.errors import UserError

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RELATION_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_PACKAGE_RELATIONS = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def _column_index(reference: str) -> int:
    """0 for cell A1, 1 for B7, 26 for AA3, ..."""
    letters = re.match(r"[A-Z]+", reference)
    if letters is None:
        raise ValueError(f"cell reference {reference!r}")
    index = 0
    for letter in letters.group():
        index = index * 26 + ord(letter) - ord("A") + 1
    return index - 1


def _text(element: ElementTree.Element) -> str:
    """The text of a shared string or inline string: its runs joined."""
    return "".join(node.text or "" for node in element.iter(f"{_MAIN}t"))


def _first_sheet_part(bundle: zipfile.ZipFile) -> str:
    workbook = ElementTree.fromstring(bundle.read("xl/workbook.xml"))
    sheet = workbook.find(f"{_MAIN}sheets/{_MAIN}sheet")
    if sheet is None:
        raise ValueError("the workbook has no sheet")
    relations = ElementTree.fromstring(bundle.read("xl/_rels/workbook.xml.rels"))
    for relation in relations.iter(f"{_PACKAGE_RELATIONS}Relationship"):
        if relation.get("Id") == sheet.get(_RELATION_ID):
            target = relation.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    raise ValueError("the first sheet's part is not listed")


def _cell_value(cell: ElementTree.Element, shared: list[str]) -> str:
    kind, value = cell.get("t"), cell.find(f"{_MAIN}v")
    if kind == "inlineStr":
        inline = cell.find(f"{_MAIN}is")
        return "" if inline is None else _text(inline)
    if value is None or value.text is None:
        return ""
    return shared[int(value.text)] if kind == "s" else value.text


def read_first_sheet(path: Path) -> list[list[str]]:
    """The rows of the workbook's first sheet, each a list of cell texts (numbers as written in the
    file, empty cells as ""), in sheet order; a UserError naming the file when it is no .xlsx."""
    try:
        with zipfile.ZipFile(path) as bundle:
            shared = []
            if "xl/sharedStrings.xml" in bundle.namelist():
                strings = ElementTree.fromstring(bundle.read("xl/sharedStrings.xml"))
                shared = [_text(item) for item in strings.iter(f"{_MAIN}si")]
            sheet = ElementTree.fromstring(bundle.read(_first_sheet_part(bundle)))
            rows = []
            for row in sheet.iter(f"{_MAIN}row"):
                cells: dict[int, str] = {}
                for cell in row.iter(f"{_MAIN}c"):
                    cells[_column_index(cell.get("r", ""))] = _cell_value(cell, shared)
                rows.append([cells.get(column, "") for column in range(max(cells, default=-1) + 1)])
            return rows
    except (zipfile.BadZipFile, KeyError, ValueError, IndexError, ElementTree.ParseError) as error:
        raise UserError(f"{path} is not a readable .xlsx workbook ({type(error).__name__}: {error}): "
                        "save it again as an Excel workbook, or download it again") from None

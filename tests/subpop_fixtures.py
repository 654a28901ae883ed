"""Tiny NICO++ and CheXpert in their real formats: NICO++'s track_1.zip layout and label-id JSON,
CheXpert-v1.0-small's CSVs and grayscale JPEGs and the demographics workbook (.xlsx written part by
part, as Excel stores it)."""
import io
import json
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image

import download_fixtures as fx

# NICO++: (context, class) -> images. y ids are the JSON's, not positions; 80 and 78 images leave 5 and 3
# for training once 75 go to evaluation; the small groups are evaluation only.
NICOPP_LABEL_IDS = {"bear": 3, "cat": 0}
NICOPP_IMAGES = {("autumn", "bear"): 80, ("autumn", "cat"): 4, ("dim", "bear"): 2, ("dim", "cat"): 78,
                 ("water", "cat"): 1}


def make_nicopp(mirror: Path) -> None:
    """nicopp/track_1.zip (public_dg_0416/train/<context>/<class>/*.jpg) and nicopp/dg_label_id_mapping.json."""
    (mirror / "nicopp").mkdir(parents=True)
    with zipfile.ZipFile(mirror / "nicopp" / "track_1.zip", "w") as bundle:
        seed = 0
        for (context, label), count in NICOPP_IMAGES.items():
            for index in range(count):
                seed += 1
                bundle.writestr(f"public_dg_0416/train/{context}/{label}/{label}_{index:03d}.jpg", fx.jpeg_bytes(seed))
    (mirror / "nicopp" / "dg_label_id_mapping.json").write_text(json.dumps(NICOPP_LABEL_IDS))


# CheXpert: 84 kept patients, one frontal image each (78 in train.csv, 6 in valid.csv): sex alternates,
# race cycles White, Black, other, so each of the 6 attribute values has 14 rows; then a patient of
# unknown sex and one the workbook does not list, both dropped.
RACES = ("White", "Black", "Asian")
RACE_SPELLINGS = {"White": ("White", "White, non-Hispanic"), "Black": ("Black", "Black or African American"),
                  "Asian": ("Asian", "")}
KEPT = 84
VALID_FIRST_PATIENT = 64541
CSV_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
              "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,"
              "Pleural Other,Fracture,Support Devices")


def chexpert_patient(row: int) -> int:
    """The patient number of kept row ``row``: 1, 2, ... in train.csv, 64541, ... in valid.csv."""
    return row + 1 if row < KEPT - 6 else VALID_FIRST_PATIENT + row - (KEPT - 6)


def chexpert_row(row: int) -> tuple[str, str, str]:
    """(sex, race, No Finding cell) of kept row ``row``."""
    no_finding = "1.0" if row % 5 == 0 else ("0.0" if row % 7 == 0 else "")
    return ("Male", "Female")[row % 2], RACES[(row // 2) % 3], no_finding


def _grey_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (10, 12), seed % 256).save(buffer, format="JPEG")
    return buffer.getvalue()


def _csv_line(split: str, patient: int, sex: str, no_finding: str) -> str:
    return (f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study1/view1_frontal.jpg,{sex},60,Frontal,AP,"
            f"{no_finding},,1.0,,,,,,,,,,,1.0")


def write_xlsx(path: Path, rows: list[list[str | int]]) -> None:
    """A one-sheet Excel workbook: text cells through the shared strings (every other one inline), numbers as
    numbers."""
    shared: list[str] = []
    sheet_rows = []
    for number, row in enumerate(rows, start=1):
        cells = []
        for column, value in enumerate(row):
            reference = f"{chr(ord('A') + column)}{number}"
            if isinstance(value, int):
                cells.append(f'<c r="{reference}"><v>{value}</v></c>')
            elif column % 2:
                cells.append(f'<c r="{reference}" t="inlineStr"><is><t>{escape(value)}</t></is></c>')
            else:
                shared.append(value)
                cells.append(f'<c r="{reference}" t="s"><v>{len(shared) - 1}</v></c>')
        sheet_rows.append(f'<row r="{number}">{"".join(cells)}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    relations = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    package = "http://schemas.openxmlformats.org/package/2006/relationships"
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'),
        "_rels/.rels": (f'<Relationships xmlns="{package}"><Relationship Id="rId1" '
                        f'Type="{relations}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (f'<workbook xmlns="{main}" xmlns:r="{relations}"><sheets>'
                            '<sheet name="CHEXPERT DEMO" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{package}">'
            f'<Relationship Id="rId1" Type="{relations}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{relations}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'),
        "xl/worksheets/sheet1.xml": (f'<worksheet xmlns="{main}"><sheetData>{"".join(sheet_rows)}</sheetData>'
                                     "</worksheet>"),
        "xl/sharedStrings.xml": (f'<sst xmlns="{main}" count="{len(shared)}" uniqueCount="{len(shared)}">'
                                 + "".join(f"<si><t>{escape(text)}</t></si>" for text in shared) + "</sst>"),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, text in parts.items():
            bundle.writestr(name, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + text)


def place_chexpert(data_path: Path) -> Path:
    """<data_path>/chexpert as a user places it (CheXpert-v1.0-small's contents and CHEXPERT DEMO.xlsx)."""
    folder = data_path / "chexpert"
    lines = {"train": [CSV_HEADER], "valid": [CSV_HEADER]}
    demographics: list[list[str | int]] = [["PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY"]]
    for row in range(KEPT):
        split = "train" if row < KEPT - 6 else "valid"
        patient = chexpert_patient(row)
        sex, race, no_finding = chexpert_row(row)
        lines[split].append(_csv_line(split, patient, sex, no_finding))
        fx._write(folder / split / f"patient{patient:05d}" / "study1" / "view1_frontal.jpg", _grey_jpeg(row))
        demographics.append([f"patient{patient:05d}", sex, 60, RACE_SPELLINGS[race][row % 2], "Unknown"])
    lines["train"].append(_csv_line("train", 90001, "Unknown", "1.0"))  # dropped: sex neither Male nor Female
    lines["train"].append(_csv_line("train", 90002, "Male", "1.0"))  # dropped: not in the workbook
    demographics.append(["patient90001", "Unknown", 60, "White", "Unknown"])
    for split, text in lines.items():
        fx._write(folder / f"{split}.csv", "\n".join(text) + "\n")
    write_xlsx(folder / "CHEXPERT DEMO.xlsx", demographics)
    return folder

//! Pass codes as pictures: the QR matrix, SVG and PNG images, and printable A4 sheets in
//! PDF, one page per carnet, with what each pass prints. Pure: an order and its passes
//! in, bytes out.

use crate::code::Keyring;
use crate::domain::{french_date, Order, Serial, Timestamp};
use qrcode::{Color, EcLevel, QrCode};
use std::io::{self, Write};

/// Quiet zone around a QR code, in modules, as the standard asks.
const QUIET_MODULES: usize = 4;
/// Pixels per module in PNG output: large enough for any phone camera.
const PNG_MODULE_PX: usize = 8;

/// The QR matrix (row-major, true = dark) and its width in modules.
pub fn qr_matrix(payload: &str) -> (Vec<bool>, usize) {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .expect("a pass payload always fits a QR code");
    let width = code.width();
    (
        code.to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect(),
        width,
    )
}

/// The QR version chosen for a payload (1–40).
pub fn qr_version(payload: &str) -> i16 {
    match QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .expect("fits")
        .version()
    {
        qrcode::Version::Normal(v) | qrcode::Version::Micro(v) => v,
    }
}

pub fn svg(payload: &str) -> Vec<u8> {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M).expect("fits");
    code.render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build()
        .into_bytes()
}

pub fn png(payload: &str) -> Vec<u8> {
    let (matrix, width) = qr_matrix(payload);
    let side = (width + 2 * QUIET_MODULES) * PNG_MODULE_PX;
    let mut pixels = vec![255u8; side * side];
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (x / PNG_MODULE_PX, y / PNG_MODULE_PX);
            let inside = (QUIET_MODULES..QUIET_MODULES + width).contains(&mx)
                && (QUIET_MODULES..QUIET_MODULES + width).contains(&my);
            if inside && matrix[(my - QUIET_MODULES) * width + (mx - QUIET_MODULES)] {
                pixels[y * side + x] = 0;
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("in-memory PNG header");
    writer
        .write_image_data(&pixels)
        .expect("in-memory PNG data");
    writer.finish().expect("in-memory PNG end");
    out
}

/// One pass as printed on a sheet.
#[derive(Clone, Debug)]
pub struct PrintedPass {
    pub payload: String,
    pub serial: String,
    pub verification_code: String,
    pub position: String,
}

/// What every pass of a carnet shares.
#[derive(Clone, Debug)]
pub struct SheetHeader {
    pub commanditaire: String,
    pub face_value: String,
    pub validity: String,
    pub order: String,
}

impl SheetHeader {
    /// What every sheet of an order prints: who ordered, the face value, the validity.
    pub fn of(order: &Order, commanditaire: String) -> SheetHeader {
        SheetHeader {
            commanditaire,
            face_value: format!(
                "Valeur : {} €",
                crate::export::euros_comma(order.face_value)
            ),
            validity: format!(
                "Valable du {} au {}",
                french_date(order.valid_from),
                french_date(Timestamp(order.expires_at().0 - 1))
            ),
            order: format!("Commande {}", order.id),
        }
    }
}

/// One page per carnet of `carnets` (indexes into the order's carnets): its title and its
/// passes, each with what its holder reads and what a scanner reads.
pub fn carnet_pages(
    keys: &Keyring,
    order: &Order,
    serials: &[Serial],
    carnets: &[u32],
) -> Vec<(String, Vec<PrintedPass>)> {
    let size = order.carnet_size as usize;
    carnets
        .iter()
        .map(|&c| {
            let from = c as usize * size;
            let carnet = &serials[from.min(serials.len())..(from + size).min(serials.len())];
            let printed = carnet
                .iter()
                .enumerate()
                .map(|(i, s)| PrintedPass {
                    payload: keys.qr_payload(*s),
                    serial: s.to_string(),
                    verification_code: keys.verification_code(*s),
                    position: format!("Carnet {} · pass {}/{}", c + 1, i + 1, carnet.len()),
                })
                .collect();
            let title = format!("Carnet {} / {}", c + 1, order.carnet_count());
            (title, printed)
        })
        .collect()
}

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const CELL_W: f32 = PAGE_W / 2.0;
const CELL_H: f32 = 156.0;
const TOP: f32 = 810.0;
const QR_SIDE: f32 = 112.0;
/// A page holds 10 passes: the largest carnet DOMAIN.md knows.
pub const PASSES_PER_PAGE: usize = 10;

/// Writes a PDF with one page per carnet (`carnets[i]` holds at most 10 passes).
pub fn sheet_pdf(
    out: &mut impl Write,
    header: &SheetHeader,
    carnets: &[(String, Vec<PrintedPass>)],
) -> io::Result<()> {
    let contents = carnets
        .iter()
        .map(|(title, passes)| page_content(header, title, passes));
    write_pages(out, carnets.len(), contents)
}

/// Writes an A4 PDF of `count` pages with the two standard fonts (F1 Helvetica, F2
/// Helvetica-Bold); each page's content stream is produced when it is written.
pub fn write_pages(
    out: &mut impl Write,
    count: usize,
    contents: impl Iterator<Item = Vec<u8>>,
) -> io::Result<()> {
    let mut pdf = Pdf {
        out,
        offset: 0,
        offsets: vec![],
    };
    pdf.raw(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")?;
    let kids: Vec<String> = (0..count).map(|i| format!("{} 0 R", 5 + 2 * i)).collect();
    pdf.object(1, b"<< /Type /Catalog /Pages 2 0 R >>")?;
    pdf.object(
        2,
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            count
        )
        .as_bytes(),
    )?;
    pdf.object(
        3,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    )?;
    pdf.object(
        4,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
    )?;
    for (i, content) in contents.take(count).enumerate() {
        let page = 5 + 2 * i;
        let dict = format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_W} {PAGE_H}] /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
            page + 1
        );
        pdf.object(page, dict.as_bytes())?;
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend_from_slice(&content);
        stream.extend_from_slice(b"\nendstream");
        pdf.object(page + 1, &stream)?;
    }
    pdf.finish()
}

struct Pdf<'a, W: Write> {
    out: &'a mut W,
    offset: usize,
    offsets: Vec<usize>,
}

impl<W: Write> Pdf<'_, W> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len();
        Ok(())
    }
    fn object(&mut self, n: usize, body: &[u8]) -> io::Result<()> {
        debug_assert_eq!(n, self.offsets.len() + 1, "objects are written in order");
        self.offsets.push(self.offset);
        self.raw(format!("{n} 0 obj\n").as_bytes())?;
        self.raw(body)?;
        self.raw(b"\nendobj\n")
    }
    fn finish(mut self) -> io::Result<()> {
        let xref = self.offset;
        let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", self.offsets.len() + 1);
        for o in &self.offsets {
            table.push_str(&format!("{o:010} 00000 n \n"));
        }
        table.push_str(&format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            self.offsets.len() + 1
        ));
        self.raw(table.as_bytes())
    }
}

fn page_content(header: &SheetHeader, title: &str, passes: &[PrintedPass]) -> Vec<u8> {
    let mut c = Vec::new();
    text(
        &mut c,
        "F2",
        9.0,
        30.0,
        825.0,
        &format!("{title} · {} · {}", header.order, header.commanditaire),
    );
    for (i, pass) in passes.iter().take(PASSES_PER_PAGE).enumerate() {
        let x = (i % 2) as f32 * CELL_W;
        let y = TOP - (i / 2 + 1) as f32 * CELL_H;
        // Cut marks: a thin grey frame around each pass.
        c.extend_from_slice(
            format!(
                "0.7 G 0.5 w {:.1} {:.1} {CELL_W:.1} {CELL_H:.1} re S 0 G\n",
                x, y
            )
            .as_bytes(),
        );
        qr_rects(
            &mut c,
            &pass.payload,
            x + 12.0,
            y + (CELL_H - QR_SIDE) / 2.0,
        );
        let tx = x + QR_SIDE + 22.0;
        let lines: [(&str, f32, &str); 7] = [
            ("F2", 12.0, "PASS NUMÉRIQUE"),
            ("F1", 8.0, &header.commanditaire),
            ("F2", 12.0, &header.face_value),
            ("F1", 7.0, &header.validity),
            ("F2", 10.0, &pass.serial),
            ("F1", 9.0, &format!("Code : {}", pass.verification_code)),
            ("F1", 7.0, &pass.position),
        ];
        let mut ty = y + CELL_H - 28.0;
        for (font, size, line) in lines {
            // Helvetica averages about half an em per character; a cell's text column is ~150 pt.
            text(
                &mut c,
                font,
                size,
                tx,
                ty,
                &clip(line, (300.0 / size) as usize),
            );
            ty -= size + 7.0;
        }
    }
    c
}

fn clip(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(chars - 1).collect();
    t.push('…');
    t
}

/// Draws the QR's dark modules, merging horizontal runs into one rectangle each.
fn qr_rects(c: &mut Vec<u8>, payload: &str, x0: f32, y0: f32) {
    let (m, w) = qr_matrix(payload);
    let module = QR_SIDE / (w + 2 * QUIET_MODULES) as f32;
    let origin = QUIET_MODULES as f32 * module;
    for row in 0..w {
        let mut col = 0;
        while col < w {
            if !m[row * w + col] {
                col += 1;
                continue;
            }
            let start = col;
            while col < w && m[row * w + col] {
                col += 1;
            }
            let x = x0 + origin + start as f32 * module;
            let y = y0 + QR_SIDE - origin - (row + 1) as f32 * module;
            c.extend_from_slice(
                format!(
                    "{x:.2} {y:.2} {:.2} {module:.2} re\n",
                    (col - start) as f32 * module
                )
                .as_bytes(),
            );
        }
    }
    c.extend_from_slice(b"f\n");
}

/// Writes one line of text at (x, y) in points from the page's lower left corner.
pub fn text(c: &mut Vec<u8>, font: &str, size: f32, x: f32, y: f32, s: &str) {
    c.extend_from_slice(format!("BT /{font} {size} Tf {x:.1} {y:.1} Td (").as_bytes());
    c.extend(win_ansi(s));
    c.extend_from_slice(b") Tj ET\n");
}

/// Encodes text for the standard fonts' WinAnsiEncoding, escaping PDF string syntax.
fn win_ansi(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for ch in s.chars() {
        let b = match ch {
            '(' | ')' | '\\' => {
                out.push(b'\\');
                ch as u8
            }
            ' '..='~' => ch as u8,
            '\u{a0}'..='\u{ff}' => ch as u32 as u8,
            '€' => 0x80,
            '…' => 0x85,
            '’' => 0x92,
            '–' => 0x96,
            '—' => 0x97,
            _ => b'?',
        };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Carnets 1 and 3 of an order of 12 passes in carnets of 5: the last carnet holds
    /// the 2 left, each pass printed with its own code, numbered in its carnet.
    #[test]
    fn carnet_pages_print_each_chosen_carnet_with_its_passes() {
        let day = |y, m, d| {
            Timestamp(i64::from(crate::domain::days_from_civil(y, m, d)) * Timestamp::MS_PER_DAY)
        };
        let order = Order {
            id: crate::domain::OrderId(7),
            commanditaire: crate::domain::CommanditaireId(1),
            pass_count: 12,
            carnet_size: 5,
            face_value: crate::domain::Cents(1050),
            valid_from: day(2026, 1, 1),
            valid_until: day(2027, 1, 1),
            grace_days: 31,
            perimeter: Default::default(),
            services: Default::default(),
            programme: crate::domain::Label::parse("Pass numérique 2026").unwrap(),
            created_at: day(2025, 12, 1),
            minted: true,
            funding: None,
            distributed: Default::default(),
            swept: false,
        };
        let header = SheetHeader::of(&order, "Département de la Creuse".into());
        assert_eq!(header.face_value, "Valeur : 10,50 €");
        assert_eq!(header.validity, "Valable du 01/01/2026 au 31/01/2027");
        assert_eq!(header.order, "Commande O7");
        let keys = Keyring::new(1, [(1, [9; 32])].into()).unwrap();
        let serials: Vec<Serial> = (1..=12).map(Serial::from_random).collect();
        let pages = carnet_pages(&keys, &order, &serials, &[0, 2]);
        let titles: Vec<&str> = pages.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(titles, ["Carnet 1 / 3", "Carnet 3 / 3"]);
        assert_eq!(pages[0].1.len(), 5);
        let last = &pages[1].1;
        assert_eq!(last.len(), 2);
        assert_eq!(last[1].serial, serials[11].to_string());
        assert_eq!(last[1].payload, keys.qr_payload(serials[11]));
        assert_eq!(
            last[1].verification_code,
            keys.verification_code(serials[11])
        );
        assert_eq!(last[1].position, "Carnet 3 · pass 2/2");
        assert_eq!(pages[0].1[4].position, "Carnet 1 · pass 5/5");
    }

    #[test]
    fn pass_payloads_fit_version_2() {
        assert!(qr_version("PN1:0123456789ABX:1K3M5P7Q") <= 5);
        assert_eq!(qr_version("PN1:0123456789ABX:1K3M5P7Q"), 2);
    }

    #[test]
    fn win_ansi_escapes_and_maps() {
        assert_eq!(win_ansi("é(€)"), vec![0xE9, b'\\', b'(', 0x80, b'\\', b')']);
    }

    #[test]
    fn pdf_xref_points_at_objects() {
        let header = SheetHeader {
            commanditaire: "Gironde".into(),
            face_value: "10,00 €".into(),
            validity: "v".into(),
            order: "O1".into(),
        };
        let pass = PrintedPass {
            payload: "PN1:0123456789ABX:1K3M5P7Q".into(),
            serial: "s".into(),
            verification_code: "c".into(),
            position: "p".into(),
        };
        let mut out = Vec::new();
        sheet_pdf(
            &mut out,
            &header,
            &[("Carnet 1".into(), vec![pass.clone(), pass])],
        )
        .unwrap();
        let tail = String::from_utf8_lossy(&out[out.len() - 40..]).into_owned();
        let start: usize = tail
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(out[start..].starts_with(b"xref"));
        let table = String::from_utf8(out[start..].to_vec()).unwrap();
        for (n, line) in table.lines().skip(3).take(6).enumerate() {
            let off: usize = line[..10].parse().unwrap();
            assert!(
                out[off..].starts_with(format!("{} 0 obj", n + 1).as_bytes()),
                "object {}",
                n + 1
            );
        }
    }
}

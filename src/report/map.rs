//! A world map as inline SVG, for a report that must open with no network: the country outlines
//! of the dashboard's map (Natural Earth 1:110m via world-atlas, TopoJSON, public domain)
//! decoded here, and the incident's places as dots.

use std::fmt::Write;

use serde::Deserialize;

const COUNTRIES: &str = include_str!("../../web/vendor/world-atlas/countries-110m.json");
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 480.0;

#[derive(Deserialize)]
struct Topology {
    transform: Transform,
    arcs: Vec<Vec<[f64; 2]>>,
    objects: Objects,
}

#[derive(Deserialize)]
struct Transform {
    scale: [f64; 2],
    translate: [f64; 2],
}

#[derive(Deserialize)]
struct Objects {
    countries: Collection,
}

#[derive(Deserialize)]
struct Collection {
    geometries: Vec<Geometry>,
}

/// A polygon is rings of arc indexes; a multipolygon, polygons.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum Geometry {
    Polygon {
        arcs: Vec<Vec<i64>>,
    },
    MultiPolygon {
        arcs: Vec<Vec<Vec<i64>>>,
    },
    #[serde(other)]
    Other,
}

/// A place on the map: where, and what to call it.
pub struct Place {
    pub latitude: f64,
    pub longitude: f64,
    pub label: String,
}

fn project(longitude: f64, latitude: f64) -> (f64, f64) {
    ((longitude + 180.0) / 360.0 * WIDTH, (90.0 - latitude) / 180.0 * HEIGHT)
}

/// Arcs are delta-encoded in quantized units; this gives each in degrees.
fn decoded_arcs(topology: &Topology) -> Vec<Vec<(f64, f64)>> {
    let [sx, sy] = topology.transform.scale;
    let [tx, ty] = topology.transform.translate;
    topology
        .arcs
        .iter()
        .map(|arc| {
            let (mut x, mut y) = (0.0, 0.0);
            arc.iter()
                .map(|[dx, dy]| {
                    x += dx;
                    y += dy;
                    (x * sx + tx, y * sy + ty)
                })
                .collect()
        })
        .collect()
}

/// One ring as an SVG sub-path; a jump across the antimeridian starts a new sub-path.
fn ring_path(arcs: &[Vec<(f64, f64)>], ring: &[i64], out: &mut String) {
    let mut points: Vec<(f64, f64)> = Vec::new();
    for &index in ring {
        let (arc, reversed) = if index < 0 { ((!index) as usize, true) } else { (index as usize, false) };
        let Some(arc) = arcs.get(arc) else { continue };
        let mut part = arc.clone();
        if reversed {
            part.reverse();
        }
        points.extend(part);
    }
    for (i, (lon, lat)) in points.iter().enumerate() {
        let jump = i > 0 && (lon - points[i - 1].0).abs() > 180.0;
        let (x, y) = project(*lon, *lat);
        let _ = write!(out, "{}{x:.1},{y:.1}", if i == 0 || jump { "M" } else { "L" });
    }
    out.push('Z');
}

fn outlines() -> String {
    let Ok(topology) = serde_json::from_str::<Topology>(COUNTRIES) else { return String::new() };
    let arcs = decoded_arcs(&topology);
    let mut path = String::new();
    for geometry in &topology.objects.countries.geometries {
        let polygons: Vec<&Vec<Vec<i64>>> = match geometry {
            Geometry::Polygon { arcs } => vec![arcs],
            Geometry::MultiPolygon { arcs } => arcs.iter().collect(),
            Geometry::Other => vec![],
        };
        for polygon in polygons {
            for ring in polygon {
                ring_path(&arcs, ring, &mut path);
            }
        }
    }
    path
}

/// The map with a dot per place (labels escaped by `escape`).
pub fn world_map(places: &[Place], escape: impl Fn(&str) -> String) -> String {
    let mut svg = format!(
        r#"<svg class="map" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="where the incident came from"><path class="land" d="{}"/>"#,
        outlines()
    );
    for place in places {
        let (x, y) = project(place.longitude.clamp(-180.0, 180.0), place.latitude.clamp(-90.0, 90.0));
        let label = escape(&place.label);
        let _ = write!(
            svg,
            r#"<circle class="place" cx="{x:.1}" cy="{y:.1}" r="5"><title>{label}</title></circle><text x="{:.1}" y="{:.1}">{label}</text>"#,
            x + 7.0,
            y + 4.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outlines_decode_and_places_land_where_they_are() {
        let path = outlines();
        assert!(path.len() > 10_000 && path.starts_with('M'), "{} bytes", path.len());
        // Every point is on the map.
        for number in path.split(['M', 'L', 'Z', ',']).filter(|s| !s.is_empty()) {
            let value: f64 = number.parse().unwrap();
            assert!((-1.0..=WIDTH + 1.0).contains(&value), "{value}");
        }
        let kyiv = Place { latitude: 50.45, longitude: 30.52, label: "<Kyiv>".into() };
        let svg = world_map(&[kyiv], |s| s.replace('<', "&lt;").replace('>', "&gt;"));
        assert!(svg.contains(r#"cx="561.4" cy="105.5""#), "{}", &svg[svg.len() - 300..]);
        assert!(svg.contains("&lt;Kyiv&gt;") && !svg.contains("<Kyiv>"));
    }
}

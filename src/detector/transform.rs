//! How an image was brought to the model's input ([`Transform`]), and the way back for boxes,
//! rotated boxes and points: one place for every head and task.

use super::heads::BBox;
use super::rotated::Rbox;
use super::spec::Frame;

/// How an image was brought to the input tensor, so boxes can be mapped back: input pixel
/// `x = image x × gain_x + pad_x` (and the same for y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Input pixels per image pixel, horizontally.
    pub gain_x: f32,
    /// Input pixels per image pixel, vertically.
    pub gain_y: f32,
    /// Padding left of the image in the input.
    pub pad_x: f32,
    /// Padding above the image in the input.
    pub pad_y: f32,
    /// The input tensor's width.
    pub input_width: u32,
    /// The input tensor's height.
    pub input_height: u32,
    /// The image's width.
    pub width: u32,
    /// The image's height.
    pub height: u32,
}

impl Transform {
    /// A point in input pixels → image pixels, clamped to the image (Ultralytics'
    /// `scale_coords` with its clipping): keypoints and mask outlines.
    pub fn unmap_point(&self, x: f32, y: f32) -> [f32; 2] {
        [
            ((x - self.pad_x) / self.gain_x).clamp(0.0, self.width as f32),
            ((y - self.pad_y) / self.gain_y).clamp(0.0, self.height as f32),
        ]
    }

    /// A rotated box in input pixels → image pixels (centre through the padding and gains, sides
    /// by the gains, as Ultralytics' `scale_boxes(xywh=True)`; not clipped).
    pub fn unmap_rotated(&self, r: Rbox) -> Rbox {
        Rbox {
            cx: (r.cx - self.pad_x) / self.gain_x,
            cy: (r.cy - self.pad_y) / self.gain_y,
            w: r.w / self.gain_x,
            h: r.h / self.gain_y,
            angle: r.angle,
        }
    }

    /// A box in `frame` → image pixels, clamped to the image.
    pub fn unmap(&self, b: BBox, frame: Frame) -> BBox {
        let (w, h) = (self.width as f32, self.height as f32);
        let b = match frame {
            Frame::OriginalPixels => b,
            Frame::InputPixels | Frame::Normalized => {
                let (sx, sy) = match frame {
                    Frame::Normalized => (self.input_width as f32, self.input_height as f32),
                    _ => (1.0, 1.0),
                };
                let x = |v: f32| (v * sx - self.pad_x) / self.gain_x;
                let y = |v: f32| (v * sy - self.pad_y) / self.gain_y;
                BBox { x1: x(b.x1), y1: y(b.y1), x2: x(b.x2), y2: y(b.y2) }
            }
        };
        BBox { x1: b.x1.clamp(0.0, w), y1: b.y1.clamp(0.0, h), x2: b.x2.clamp(0.0, w), y2: b.y2.clamp(0.0, h) }
    }
}

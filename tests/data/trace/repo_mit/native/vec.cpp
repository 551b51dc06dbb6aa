#include <vector>

namespace geometry {
struct Point { double x, y; };

double polygon_area(const std::vector<Point>& points) {
    double twice_area = 0.0;
    for (size_t i = 0, j = points.size() - 1; i < points.size(); j = i++) {
        twice_area += (points[j].x + points[i].x) * (points[j].y - points[i].y);
    }
    return twice_area < 0 ? -twice_area / 2.0 : twice_area / 2.0;
}
}  // namespace geometry
